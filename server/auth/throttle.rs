//! Login throttling without permanent lock-out.
//!
//! NIST SP 800-63B 5.2.2 (rate limiting): limit consecutive failed attempts
//! on a single account, prefer increasing delays to lock-out (which turns
//! into a denial of service against the real user). OWASP Authentication
//! Cheat Sheet ("Protect against automated attacks"): throttle per account
//! and per source address.
//!
//! Two independent limits, both in memory (they reset when the process
//! restarts, which is acceptable for throttling):
//!
//! - **per IP**: a token bucket (`ip_burst` tokens, refilled at
//!   `ip_per_minute`); IPv6 addresses are grouped by /64, since one client
//!   usually owns a whole /64, and IPv4-mapped IPv6 counts as IPv4;
//! - **per account** (normalised email, known or not so that nothing
//!   reveals which accounts exist): the first `account_free_failures`
//!   failures cost nothing, then each failure blocks the account for
//!   `account_base_delay × 2^k` (k = 0, 1, 2, …), capped at
//!   `account_max_delay`. When the delay has passed one attempt is allowed
//!   again: never a permanent lock-out. A success resets the account.
//!
//! Memory is bounded: entries expire (a full IP bucket, an account without
//! failures for `account_forget_after`) and each map holds at most
//! `max_entries`, evicting the least recently used when full.
//!
//! All methods take `now` so tests are deterministic; callers pass
//! `Instant::now()`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a reserved attempt (an `Ok` from [`Throttle::check_account`]
/// not yet followed by `record_failure`/`record_success`) keeps its slot: a
/// request that was dropped mid-way must not hold the account forever.
const PENDING_TTL: Duration = Duration::from_secs(60);
/// Full expiry sweeps run at most this often (plus whenever a map is full).
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Throttling limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Bucket size per IP: attempts allowed in a burst (0 is treated as 1).
    pub ip_burst: u32,
    /// Steady refill per IP in attempts per minute (0 is treated as 1).
    pub ip_per_minute: u32,
    /// First delay once the free failures are used up.
    pub account_base_delay: Duration,
    /// Longest delay; the back-off never grows past it.
    pub account_max_delay: Duration,
    /// Failures in a row that cost no delay.
    pub account_free_failures: u32,
    /// An account's failure count is forgotten this long after its last
    /// back-off ended with no new failure (NIST asks to bound *consecutive*
    /// failures; forgetting too soon would let a slow attacker reset it).
    pub account_forget_after: Duration,
    /// Most entries kept per map (IPs, accounts); the least recently used
    /// are evicted beyond it.
    pub max_entries: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            ip_burst: 10,
            ip_per_minute: 30,
            account_base_delay: Duration::from_secs(1),
            account_max_delay: Duration::from_secs(15 * 60),
            account_free_failures: 3,
            account_forget_after: Duration::from_secs(24 * 60 * 60),
            max_entries: 100_000,
        }
    }
}

/// Refused: try again after `after` (send it as `Retry-After`, see
/// [`Retry::after_secs`], with 429 Too Many Requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub after: Duration,
}

impl Retry {
    /// Whole seconds, rounded up, at least 1: the `Retry-After` value.
    pub fn after_secs(&self) -> u64 {
        let s = self.after.as_secs() + u64::from(self.after.subsec_nanos() > 0);
        s.max(1)
    }
}

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "too many attempts; try again in {} s", self.after_secs())
    }
}

impl std::error::Error for Retry {}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
struct Account {
    /// Consecutive failures.
    failures: u32,
    /// Attempts allowed by `check_account` and not yet recorded.
    pending: u32,
    /// When the newest pending attempt was allowed.
    pending_since: Instant,
    /// No attempt before this.
    blocked_until: Instant,
    /// Last change, for expiry and eviction.
    last: Instant,
}

#[derive(Debug)]
struct State {
    ips: HashMap<IpAddr, Bucket>,
    accounts: HashMap<String, Account>,
    last_prune: Option<Instant>,
}

/// Per-IP token buckets and per-account exponential back-off.
/// `Send + Sync`; share one per server (e.g. in an `Arc` or app data).
#[derive(Debug)]
pub struct Throttle {
    cfg: ThrottleConfig,
    state: Mutex<State>,
}

impl Throttle {
    pub fn new(cfg: ThrottleConfig) -> Self {
        Self {
            cfg,
            state: Mutex::new(State {
                ips: HashMap::new(),
                accounts: HashMap::new(),
                last_prune: None,
            }),
        }
    }

    pub fn config(&self) -> &ThrottleConfig {
        &self.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Throttle state is always consistent between statements; a panic
        // elsewhere must not disable logins.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn burst(&self) -> f64 {
        f64::from(self.cfg.ip_burst.max(1))
    }

    /// Tokens per second.
    fn rate(&self) -> f64 {
        f64::from(self.cfg.ip_per_minute.max(1)) / 60.0
    }

    /// Time for an empty bucket to fill up again.
    fn ip_window(&self) -> Duration {
        Duration::from_secs_f64(self.burst() / self.rate())
    }

    /// Take one token from `ip`'s bucket (call once per login attempt,
    /// before any password work), or say when the next token will be there.
    pub fn check_ip(&self, ip: IpAddr, now: Instant) -> Result<(), Retry> {
        let key = ip_key(ip);
        let (burst, rate) = (self.burst(), self.rate());
        let mut st = self.lock();
        self.maybe_prune(&mut st, now);
        if !st.ips.contains_key(&key) {
            make_room(&mut st.ips, self.cfg.max_entries, |b| b.last);
        }
        let b = st.ips.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = b.last.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Retry {
                after: Duration::from_secs_f64((1.0 - b.tokens) / rate),
            })
        }
    }

    /// Before verifying a password for `account_key` (normalised email; the
    /// caller lower-cases it): refuses while a back-off is pending.
    ///
    /// An `Ok` reserves the attempt; the caller must follow it with
    /// [`record_failure`](Self::record_failure) or
    /// [`record_success`](Self::record_success). Reservations stop
    /// concurrent requests from all passing the check before any failure is
    /// recorded: at most the remaining free failures may be in flight at
    /// once, and only one once the account is in back-off. A reservation
    /// that is never recorded (request dropped) lapses after a minute.
    /// The account's entry, created (making room) or reset when expired.
    fn account_entry<'a>(
        &self,
        st: &'a mut State,
        account_key: &str,
        now: Instant,
    ) -> &'a mut Account {
        self.maybe_prune(st, now);
        if let Some(a) = st.accounts.get(account_key)
            && self.account_expired(a, now)
        {
            st.accounts.remove(account_key);
        }
        if !st.accounts.contains_key(account_key) {
            make_room(&mut st.accounts, self.cfg.max_entries, |a| a.last);
        }
        st.accounts
            .entry(account_key.to_owned())
            .or_insert_with(|| Account {
                failures: 0,
                pending: 0,
                pending_since: now,
                blocked_until: now,
                last: now,
            })
    }

    pub fn check_account(&self, account_key: &str, now: Instant) -> Result<(), Retry> {
        let mut st = self.lock();
        let a = self.account_entry(&mut st, account_key, now);
        if a.pending > 0 && now.saturating_duration_since(a.pending_since) >= PENDING_TTL {
            a.pending = 0;
        }
        if now < a.blocked_until {
            return Err(Retry {
                after: a.blocked_until - now,
            });
        }
        // Each attempt in flight may become a failure; allow only as many
        // as can fail before a delay is due (at least one at a time).
        let budget = self
            .cfg
            .account_free_failures
            .saturating_sub(a.failures)
            .max(1);
        if a.pending >= budget {
            return Err(Retry {
                after: self.cfg.account_base_delay.max(Duration::from_secs(1)),
            });
        }
        a.pending += 1;
        a.pending_since = now;
        a.last = a.last.max(now);
        Ok(())
    }

    /// The password was wrong (or the account does not exist). From the
    /// `account_free_failures + 1`-th failure in a row on, blocks the
    /// account for `base × 2^(n - free - 1)`, at most `account_max_delay`,
    /// counted from `now`.
    pub fn record_failure(&self, account_key: &str, now: Instant) {
        let mut st = self.lock();
        let a = self.account_entry(&mut st, account_key, now);
        a.pending = a.pending.saturating_sub(1);
        a.failures = a.failures.saturating_add(1);
        let delay = self.delay_for(a.failures);
        if !delay.is_zero() {
            let until = now.checked_add(delay).unwrap_or(now);
            a.blocked_until = a.blocked_until.max(until);
        }
        a.last = a.last.max(now);
    }

    /// The password was right: forget the account's failures.
    pub fn record_success(&self, account_key: &str) {
        self.lock().accounts.remove(account_key);
    }

    /// Back-off after `failures` consecutive failures.
    fn delay_for(&self, failures: u32) -> Duration {
        let free = self.cfg.account_free_failures;
        if failures <= free {
            return Duration::ZERO;
        }
        let exp = (failures - free - 1).min(63);
        let factor = 1u64 << exp;
        let max = self.cfg.account_max_delay;
        u32::try_from(factor)
            .ok()
            .and_then(|f| self.cfg.account_base_delay.checked_mul(f))
            .map_or(max, |d| d.min(max))
    }

    fn account_expired(&self, a: &Account, now: Instant) -> bool {
        let pending_live =
            a.pending > 0 && now.saturating_duration_since(a.pending_since) < PENDING_TTL;
        !pending_live
            && now >= a.blocked_until
            && now.saturating_duration_since(a.blocked_until.max(a.last))
                >= self.cfg.account_forget_after
    }

    /// Drop expired entries: IP buckets that have refilled completely and
    /// accounts idle for `account_forget_after` after their last back-off.
    /// Runs on its own every minute from the other methods; public for
    /// tests and for a periodic task if wanted.
    pub fn prune(&self, now: Instant) {
        let mut st = self.lock();
        self.prune_locked(&mut st, now);
    }

    /// Number of tracked (IPs, accounts).
    pub fn tracked(&self) -> (usize, usize) {
        let st = self.lock();
        (st.ips.len(), st.accounts.len())
    }

    fn maybe_prune(&self, st: &mut State, now: Instant) {
        let due = st
            .last_prune
            .is_none_or(|t| now.saturating_duration_since(t) >= PRUNE_INTERVAL);
        if due {
            self.prune_locked(st, now);
        }
    }

    fn prune_locked(&self, st: &mut State, now: Instant) {
        let window = self.ip_window();
        st.ips
            .retain(|_, b| now.saturating_duration_since(b.last) < window);
        st.accounts.retain(|_, a| !self.account_expired(a, now));
        st.last_prune = Some(now);
    }
}

/// Bucket key: IPv4 as is (also when IPv4-mapped), IPv6 by /64 prefix.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Before inserting a new key: when `map` is full, evict the least recently
/// used 1/16 (at least one) in one O(n) pass, so a flood of new keys costs
/// amortised O(1) each instead of a full scan per insert.
fn make_room<K: Eq + Hash + Clone, V>(
    map: &mut HashMap<K, V>,
    cap: usize,
    last: impl Fn(&V) -> Instant,
) {
    let cap = cap.max(1);
    if map.len() < cap {
        return;
    }
    let evict = (map.len() + 1 - cap).max(cap / 16).max(1).min(map.len());
    let mut ages: Vec<(Instant, K)> = map.iter().map(|(k, v)| (last(v), k.clone())).collect();
    ages.select_nth_unstable_by_key(evict - 1, |(t, _)| *t);
    for (_, k) in ages.into_iter().take(evict) {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn cfg() -> ThrottleConfig {
        ThrottleConfig {
            ip_burst: 3,
            ip_per_minute: 6, // one token per 10 s
            account_base_delay: secs(1),
            account_max_delay: secs(60),
            account_free_failures: 3,
            account_forget_after: secs(3600),
            max_entries: 1000,
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    /// One full login attempt that fails.
    fn fail(t: &Throttle, key: &str, now: Instant) -> Result<(), Retry> {
        t.check_account(key, now)?;
        t.record_failure(key, now);
        Ok(())
    }

    #[test]
    fn defaults() {
        let c = ThrottleConfig::default();
        assert_eq!((c.ip_burst, c.ip_per_minute), (10, 30));
        assert_eq!(c.account_base_delay, secs(1));
        assert_eq!(c.account_max_delay, secs(900));
        assert_eq!(c.account_free_failures, 3);
    }

    #[test]
    fn ip_bucket_burst_and_refill() {
        let t = Throttle::new(cfg());
        let t0 = Instant::now();
        for _ in 0..3 {
            t.check_ip(ip(1), t0).unwrap();
        }
        let r = t.check_ip(ip(1), t0).unwrap_err();
        assert_eq!(r.after, secs(10));
        assert_eq!(r.after_secs(), 10);
        // Another address has its own bucket.
        t.check_ip(ip(2), t0).unwrap();
        // Half a token later: still refused, 5 s to go.
        let r = t.check_ip(ip(1), t0 + secs(5)).unwrap_err();
        assert!(
            r.after.abs_diff(secs(5)) < Duration::from_millis(1),
            "{r:?}"
        );
        // One token after 10 s, only one.
        t.check_ip(ip(1), t0 + secs(10)).unwrap();
        assert!(t.check_ip(ip(1), t0 + secs(10)).is_err());
        // Never more than the burst, however long the pause.
        let later = t0 + secs(10_000);
        for _ in 0..3 {
            t.check_ip(ip(1), later).unwrap();
        }
        assert!(t.check_ip(ip(1), later).is_err());
    }

    #[test]
    fn ipv6_grouped_by_64_and_mapped_v4() {
        let t = Throttle::new(cfg());
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        t.check_ip(a, now).unwrap();
        t.check_ip(b, now).unwrap();
        t.check_ip(a, now).unwrap();
        assert!(t.check_ip(b, now).is_err());
        t.check_ip(other, now).unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        t.check_ip(mapped, now).unwrap();
        t.check_ip(ip(7), now).unwrap();
        t.check_ip(mapped, now).unwrap();
        assert!(t.check_ip(ip(7), now).is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let t = Throttle::new(cfg());
        let k = "alice@example.org";
        let mut now = Instant::now();
        // Three free failures.
        for _ in 0..3 {
            fail(&t, k, now).unwrap();
        }
        // Then 1, 2, 4, 8, 16, 32, 60 (cap), 60 s.
        for want in [1, 2, 4, 8, 16, 32, 60, 60, 60] {
            fail(&t, k, now).unwrap();
            let r = t.check_account(k, now).unwrap_err();
            assert_eq!(r.after, secs(want));
            // Still refused just before, allowed exactly at the end.
            let almost = now + secs(want) - Duration::from_millis(1);
            assert!(t.check_account(k, almost).is_err());
            now += secs(want);
        }
        // A huge failure count neither overflows nor exceeds the cap.
        for _ in 0..200 {
            t.record_failure(k, now);
        }
        assert_eq!(t.check_account(k, now).unwrap_err().after, secs(60));
    }

    #[test]
    fn default_config_caps_at_fifteen_minutes() {
        let t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        for _ in 0..40 {
            t.record_failure("bob@example.org", now);
        }
        let r = t.check_account("bob@example.org", now).unwrap_err();
        assert_eq!(r.after, secs(900));
    }

    #[test]
    fn success_resets() {
        let t = Throttle::new(cfg());
        let k = "carol@example.org";
        let now = Instant::now();
        for _ in 0..5 {
            t.record_failure(k, now);
        }
        assert!(t.check_account(k, now).is_err());
        let later = now + secs(2);
        t.check_account(k, later).unwrap();
        t.record_success(k);
        assert_eq!(t.tracked().1, 0);
        // Free failures again.
        for _ in 0..3 {
            fail(&t, k, later).unwrap();
        }
        fail(&t, k, later).unwrap();
        assert_eq!(t.check_account(k, later).unwrap_err().after, secs(1));
    }

    #[test]
    fn no_permanent_lockout() {
        let t = Throttle::new(cfg());
        let k = "dave@example.org";
        let now = Instant::now();
        for _ in 0..50 {
            t.record_failure(k, now);
        }
        assert!(t.check_account(k, now + secs(59)).is_err());
        // After the maximum delay one attempt is allowed...
        let then = now + secs(60);
        t.check_account(k, then).unwrap();
        // ...only one at a time while in back-off...
        assert!(t.check_account(k, then).is_err());
        // ...and the right password gets in.
        t.record_success(k);
        t.check_account(k, then).unwrap();
    }

    #[test]
    fn concurrent_attempts_are_reserved() {
        let t = Throttle::new(cfg());
        let k = "erin@example.org";
        let now = Instant::now();
        // Three attempts in flight at once (the free failures), not four.
        for _ in 0..3 {
            t.check_account(k, now).unwrap();
        }
        let r = t.check_account(k, now).unwrap_err();
        assert_eq!(r.after, secs(1));
        // All three fail: the fourth attempt is allowed, and blocks the rest.
        for _ in 0..3 {
            t.record_failure(k, now);
        }
        t.check_account(k, now).unwrap();
        assert!(t.check_account(k, now).is_err());
        // An attempt that is never recorded lapses.
        t.check_account("frank@example.org", now).unwrap();
        t.check_account("frank@example.org", now).unwrap();
        t.check_account("frank@example.org", now).unwrap();
        assert!(t.check_account("frank@example.org", now).is_err());
        t.check_account("frank@example.org", now + PENDING_TTL)
            .unwrap();
    }

    #[test]
    fn unknown_and_known_accounts_alike() {
        // The throttle does not know which accounts exist: same answers.
        let t = Throttle::new(cfg());
        let now = Instant::now();
        for _ in 0..4 {
            fail(&t, "exists@example.org", now).unwrap();
            fail(&t, "nobody@example.org", now).unwrap();
        }
        assert_eq!(
            t.check_account("exists@example.org", now),
            t.check_account("nobody@example.org", now)
        );
    }

    #[test]
    fn failures_forgotten_after_quiet_period() {
        let t = Throttle::new(cfg());
        let k = "gina@example.org";
        let now = Instant::now();
        for _ in 0..4 {
            fail(&t, k, now).unwrap();
        }
        // Blocked 1 s; forgotten an hour after that.
        let before = now + secs(1) + secs(3599);
        t.check_account(k, before).unwrap();
        t.record_failure(k, before);
        assert_eq!(t.check_account(k, before).unwrap_err().after, secs(2));
        let much_later = before + secs(2) + secs(3600);
        for _ in 0..3 {
            fail(&t, k, much_later).unwrap();
        }
        t.check_account(k, much_later).unwrap();
    }

    #[test]
    fn pruning() {
        let t = Throttle::new(cfg());
        let now = Instant::now();
        for n in 0..10 {
            t.check_ip(ip(n), now).unwrap();
        }
        for n in 0..3 {
            for _ in 0..4 {
                t.record_failure(&format!("user{n}@example.org"), now);
            }
        }
        t.record_failure("lucky@example.org", now + secs(10));
        t.record_success("lucky@example.org");
        assert_eq!(t.tracked(), (10, 3));
        // Buckets refill completely in 30 s (3 tokens at 6/min).
        t.prune(now + secs(29));
        assert_eq!(t.tracked(), (10, 3));
        t.prune(now + secs(30));
        assert_eq!(t.tracked(), (0, 3));
        // Accounts: four failures block for 1 s, forgotten an hour after.
        t.prune(now + secs(1) + secs(3599));
        assert_eq!(t.tracked().1, 3);
        t.prune(now + secs(1) + secs(3600));
        assert_eq!(t.tracked(), (0, 0));
    }

    #[test]
    fn automatic_prune_runs() {
        let t = Throttle::new(cfg());
        let now = Instant::now();
        for n in 0..10 {
            t.check_ip(ip(n), now).unwrap();
        }
        t.check_ip(ip(200), now + PRUNE_INTERVAL).unwrap();
        assert_eq!(t.tracked().0, 1);
    }

    #[test]
    fn size_is_capped_evicting_oldest() {
        let t = Throttle::new(ThrottleConfig {
            max_entries: 32,
            ..cfg()
        });
        let t0 = Instant::now();
        for n in 0..200u32 {
            let now = t0 + Duration::from_millis(u64::from(n));
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            t.check_ip(addr, now).unwrap();
            t.record_failure(&format!("u{n}@example.org"), now);
        }
        let (ips, accounts) = t.tracked();
        assert!(ips <= 32 && accounts <= 32, "{ips} {accounts}");
        // The newest are kept.
        let st = t.lock();
        assert!(st.accounts.contains_key("u199@example.org"));
        assert!(!st.accounts.contains_key("u0@example.org"));
        assert!(
            st.ips
                .contains_key(&IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 199)))
        );
    }

    #[test]
    fn retry_after_secs_rounds_up() {
        assert_eq!(
            Retry {
                after: Duration::ZERO
            }
            .after_secs(),
            1
        );
        assert_eq!(
            Retry {
                after: Duration::from_millis(1500)
            }
            .after_secs(),
            2
        );
        assert_eq!(Retry { after: secs(3) }.after_secs(), 3);
    }
}
