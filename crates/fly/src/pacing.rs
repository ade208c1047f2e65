//! Client-side pacing (token buckets) and retry/backoff settings.
//!
//! Fly documents its Machines API limits as "per action, per machine (scoped per Machine ID or
//! App ID depending on the request): 1 req/s with short bursts to 3 req/s; Get Machine 5 req/s,
//! burst 10" (docs `machines/api/working-with-machines-api`). Create is app-scoped, so bulk
//! creates are paced per app. The client waits for a token *before* each attempt (retries
//! included), so it stays under the limits instead of bouncing off 429s.
//!
//! Pacing at exactly the server's rate is not enough: the server counts a request when it
//! arrives, and network and scheduling jitter make some requests arrive a little earlier
//! after their predecessor than they were sent; each such early arrival is a 429 and, with a
//! whole-second `Retry-After`, costs a second. So the client paces each bucket a margin below
//! the documented rate ([`PacingConfig::margin`], 5 % by default: 50 ms of slack per
//! token at 1 req/s) and keeps the documented burst. It also learns from the server: a 429
//! empties the bucket until its `Retry-After` (or one token's time when there is none), and
//! rate-limit headers (`RateLimit-Remaining`/`RateLimit-Reset` of the IETF draft
//! `draft-ietf-httpapi-ratelimit-headers`, or their `X-RateLimit-*` forms), when an answer
//! carries them, lower the bucket to what the server says is left.
//!
//! The margin covers jitter, not delay: a burst sent into a full bucket but held up on its way
//! (a busy server, a slow network) arrives into a server bucket that was still full, so the
//! server's refill starts later than the client's by the delay, and the paced call after the
//! burst arrives early. So the client also learns from the answers: the server counted a
//! call no later than its answer arrived, and when that is after the call's place in the
//! client's schedule, the schedule (and every call waiting in it) moves later by the
//! difference (`Limiter::answered`; the buckets are kept in GCRA form so that this is
//! exact). A burst delayed together costs its delay once; a call sent when its place is
//! already ahead costs nothing. What this cannot see: an answer slower than the paced calls
//! behind it (more than a token's time, 1 s at Fly's rates); those fall back on the margin and
//! on `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::time::Instant;

/// A token-bucket rate: `per_second` tokens are added each second, up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Sustained requests per second (> 0).
    pub per_second: f64,
    /// Bucket size: how many requests may go at once after a pause (>= 1).
    pub burst: u32,
}

impl Rate {
    /// A rate of `per_second` with bursts of `burst`.
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Rate { per_second, burst }
    }

    /// The same burst at `1 - margin` of the rate (`margin` clamped to `0..=0.5`).
    pub fn with_margin(self, margin: f64) -> Self {
        let margin = if margin.is_finite() {
            margin.clamp(0.0, 0.5)
        } else {
            0.0
        };
        Rate {
            per_second: self.per_second * (1.0 - margin),
            burst: self.burst,
        }
    }

    /// Sustained requests per second, with a non-positive or non-finite rate read as 1/s.
    fn per_second(self) -> f64 {
        if self.per_second.is_finite() && self.per_second > 0.0 {
            self.per_second
        } else {
            1.0
        }
    }

    fn burst(self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

/// Which limits the client applies to itself. Defaults follow Fly's documented limits.
#[derive(Clone, Debug, PartialEq)]
pub struct PacingConfig {
    /// When `false`, no pacing at all (tests, or a caller with its own limiter).
    pub enabled: bool,
    /// Mutating actions per machine and action (start, stop, suspend, destroy, wait, lease,
    /// cordon): 1/s, burst 3.
    pub machine_action: Rate,
    /// `GET /v1/apps/{app}/machines/{id}` per machine: 5/s, burst 10.
    pub get_machine: Rate,
    /// Creates per app: 1/s, burst 3.
    pub create: Rate,
    /// App-scoped reads (list machines, get app) per app and org-scoped app listing per org:
    /// 1/s, burst 3.
    pub app_action: Rate,
    /// How far below each documented rate the client paces (a fraction; default 0.05, at
    /// most 0.5): the slack that absorbs jitter between sending a request and its arrival.
    /// The bursts are kept, so a short series of calls is as fast as the server allows.
    pub margin: f64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            enabled: true,
            machine_action: Rate::new(1.0, 3),
            get_machine: Rate::new(5.0, 10),
            create: Rate::new(1.0, 3),
            app_action: Rate::new(1.0, 3),
            margin: DEFAULT_MARGIN,
        }
    }
}

/// The default [`PacingConfig::margin`]: 5 % below the documented rates.
pub const DEFAULT_MARGIN: f64 = 0.05;

impl PacingConfig {
    /// The rate the client paces a bucket of documented rate `rate` at.
    pub fn paced(&self, rate: Rate) -> Rate {
        rate.with_margin(self.margin)
    }

    /// No pacing.
    pub fn disabled() -> Self {
        PacingConfig {
            enabled: false,
            ..PacingConfig::default()
        }
    }
}

/// Retries of transient failures (429, 502/503/504, connection errors, client timeouts) for
/// idempotent calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Total attempts including the first (1 = no retries). Default 4.
    pub max_attempts: u32,
    /// Backoff cap of the first retry; doubles each retry. Default 200 ms.
    pub initial_backoff: Duration,
    /// Upper bound of any backoff. Default 5 s.
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured; a 429 asking for longer is returned to the caller
    /// instead of waited out. Default 30 s.
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryConfig {
    /// No retries at all.
    pub fn none() -> Self {
        RetryConfig {
            max_attempts: 1,
            ..RetryConfig::default()
        }
    }

    /// The "full jitter" backoff before retry number `retry` (0-based): a uniformly random
    /// duration in `[0, min(max_backoff, initial_backoff * 2^retry)]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        fleetscale_core::backoff::full_jitter(self.initial_backoff, self.max_backoff, retry)
    }

    /// How long to wait before retrying after attempt number `attempt` (1-based) failed with
    /// `err`: the server's `Retry-After` when it sent one, else [`RetryConfig::backoff`].
    /// `None` when the `Retry-After` is longer than `max_retry_after`: the caller gives up and
    /// returns the error.
    pub(crate) fn delay_after(&self, attempt: u32, err: &crate::FlyError) -> Option<Duration> {
        match err {
            crate::FlyError::RateLimited {
                retry_after: Some(after),
                ..
            } => (*after <= self.max_retry_after).then_some(*after),
            _ => Some(self.backoff(attempt - 1)),
        }
    }
}

/// One bucket in GCRA form (the generic cell rate algorithm, equivalent to a token bucket):
/// `tat`, the theoretical arrival time, is when the bucket would be full again. It is full
/// whenever `tat <= now`, and each token spent moves `tat` one token's time later. Kept as a
/// time rather than a token count so that a correction learnt after the fact (an answer
/// arriving late, see [`Limiter::answered`]) can be added to it exactly: a token count is
/// clipped at the burst, and what the clip discarded cannot be recovered.
#[derive(Debug)]
struct Bucket {
    tat: Instant,
    /// The bucket's own rate, by which it refills and by which eviction judges it.
    rate: Rate,
    /// How far [`Limiter::answered`] has moved `tat` in all: calls already waiting for their
    /// slot move with it (see [`Limiter::acquire`]).
    shifted: Duration,
}

impl Bucket {
    fn new(now: Instant, rate: Rate) -> Self {
        Bucket {
            tat: now,
            rate,
            shifted: Duration::ZERO,
        }
    }

    fn token_time(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate.per_second())
    }

    fn is_full(&self, now: Instant) -> bool {
        self.tat <= now
    }

    /// Lowers the tokens at `now` to `tokens` (never raises them).
    fn lower_to(&mut self, now: Instant, tokens: f64) {
        let owed = (self.rate.burst() - tokens).max(0.0) / self.rate.per_second();
        self.tat = self
            .tat
            .max(now + Duration::from_secs_f64(owed.min(MAX_OWED_SECS)));
    }
}

/// A bucket never owes more than a day (keeps `Instant` arithmetic far from overflow whatever
/// a server's headers say).
const MAX_OWED_SECS: f64 = 86_400.0;

/// A token handed out by [`Limiter::acquire`]: which bucket, and `slot`, the moment from which
/// the client's schedule counts this call (the later of its send time and the end of the
/// calls before it). Hand it to [`Limiter::answered`] when the answer arrives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Paced {
    slot: Instant,
}

/// Buckets kept before full ones are forgotten.
const EVICT_ABOVE: usize = 4096;

/// Above [`EVICT_ABOVE`], the sweep for full buckets runs again only after this long or when
/// the map doubled since the last sweep. A sweep visits every bucket: run on every call, it
/// made each call cost O(buckets) whenever more than 4,096 buckets were still refilling (one
/// list bucket per app at 10,000 apps), while buckets become full only with time.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// When the last sweep ran and how many buckets it kept.
#[derive(Debug, Default)]
struct Sweep {
    last: Option<Instant>,
    kept: usize,
    runs: u64,
}

/// Token buckets keyed by (action, scope). Reserving is synchronous; the wait is a plain
/// sleep. Dropping a waiting [`Limiter::acquire`] (a tick's deadline passed) gives its token
/// back: kept spent, the tokens of calls that never went out would push every later token
/// further away, and a target whose ticks always end while waiting would never call again.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    buckets: Mutex<HashMap<(&'static str, String), Bucket>>,
    /// Locked only while `buckets` is.
    sweep: Mutex<Sweep>,
}

impl Limiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(&'static str, String), Bucket>> {
        match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Reserves one token and returns how long to wait before using it.
    #[cfg(test)]
    pub(crate) fn reserve(&self, action: &'static str, scope: &str, rate: Rate) -> Duration {
        self.reserve_slot(action, scope, rate).0
    }

    /// Reserves one token: how long to wait before using it, its slot, and the bucket's
    /// shift so far.
    fn reserve_slot(
        &self,
        action: &'static str,
        scope: &str,
        rate: Rate,
    ) -> (Duration, Paced, Duration) {
        let now = Instant::now();
        let mut buckets = self.lock();
        if buckets.len() > EVICT_ABOVE {
            let mut sweep = match self.sweep.lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            let due = sweep
                .last
                .is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_EVERY)
                || buckets.len() > sweep.kept.saturating_mul(2);
            if due {
                // Forget buckets that are full again, each judged by its own rate: they carry
                // no information.
                buckets.retain(|_, b| !b.is_full(now));
                *sweep = Sweep {
                    last: Some(now),
                    kept: buckets.len(),
                    runs: sweep.runs + 1,
                };
            }
        }
        let b = buckets
            .entry((action, scope.to_owned()))
            .or_insert_with(|| Bucket::new(now, rate));
        b.rate = rate;
        // GCRA: the call may go once at most `burst - 1` tokens' time is owed before it.
        let ahead = b.token_time().mul_f64(rate.burst() - 1.0);
        let send = now.max(b.tat.checked_sub(ahead).unwrap_or(now));
        let slot = b.tat.max(send);
        b.tat = slot + b.token_time();
        (send - now, Paced { slot }, b.shifted)
    }

    /// How many times the sweep for full buckets ran.
    #[cfg(test)]
    fn sweeps(&self) -> u64 {
        self.sweep.lock().map_or(0, |s| s.runs)
    }

    /// The server refused a call of this bucket (429): no token before `retry_after` from
    /// now, or before one token's time when the server did not say.
    pub(crate) fn refused(
        &self,
        action: &'static str,
        scope: &str,
        rate: Rate,
        retry_after: Option<Duration>,
    ) {
        let wait = retry_after.unwrap_or_else(|| Duration::from_secs_f64(1.0 / rate.per_second()));
        self.at_most(
            action,
            scope,
            rate,
            1.0 - wait.as_secs_f64() * rate.per_second(),
        );
    }

    /// Learns from an answer's rate-limit headers, when it has them: the bucket holds no more
    /// tokens than the server says remain, and none before the server's reset when none
    /// remain.
    pub(crate) fn observe(
        &self,
        action: &'static str,
        scope: &str,
        rate: Rate,
        headers: &HeaderMap,
    ) {
        let Some(remaining) =
            header_number(headers, &["ratelimit-remaining", "x-ratelimit-remaining"])
        else {
            return;
        };
        let reset =
            header_number(headers, &["ratelimit-reset", "x-ratelimit-reset"]).map(reset_delay);
        if remaining < 1.0 {
            // No token until the reset; without one, until a token's time from now.
            self.refused(action, scope, rate, reset);
        } else {
            self.at_most(action, scope, rate, remaining);
        }
    }

    /// Lowers the bucket's tokens at this moment to `tokens` (never raises them).
    fn at_most(&self, action: &'static str, scope: &str, rate: Rate, tokens: f64) {
        let now = Instant::now();
        let mut buckets = self.lock();
        buckets
            .entry((action, scope.to_owned()))
            .or_insert_with(|| Bucket::new(now, rate))
            .lower_to(now, tokens);
    }

    /// The answer to a paced call arrived (whatever it said, or the call failed): the server
    /// counted the call no later than now. The client's schedule counted it at its slot; if
    /// that is earlier, the server's bucket may be behind the client's by the difference (a
    /// call sent into a full bucket but delayed on its way arrives into a bucket that was
    /// still full, and the server's refill starts later than the client's), so the client's
    /// schedule moves that much later.
    ///
    /// Why this bounds the server: the server runs the same algorithm over arrival times, and
    /// each step `tat = max(tat, arrival) + T` grows with the arrival; replacing each arrival
    /// by the answer time (which is later) and adding each call's `answer - slot` to the
    /// client's schedule gives a time no earlier than the server's. The calls of a burst sent
    /// at once and delayed together cost the delay once (only the first one's slot is before
    /// its answer); a call sent when its slot is far ahead costs nothing.
    pub(crate) fn answered(&self, action: &'static str, scope: &str, paced: Paced) {
        let now = Instant::now();
        let late = now.saturating_duration_since(paced.slot);
        if late.is_zero() {
            return;
        }
        let mut buckets = self.lock();
        if let Some(b) = buckets.get_mut(&(action, scope.to_owned())) {
            let late = late.min(Duration::from_secs_f64(MAX_OWED_SECS));
            b.tat += late;
            b.shifted += late;
        }
    }

    /// How far the bucket moved since it had moved `seen` in all.
    fn shifted_since(&self, action: &'static str, scope: &str, seen: Duration) -> Duration {
        self.lock()
            .get(&(action, scope.to_owned()))
            .map_or(Duration::ZERO, |b| b.shifted.saturating_sub(seen))
    }

    /// Waits for a token. Cancellation-safe: dropped before the wait ends, it gives the token
    /// back.
    pub(crate) async fn acquire(&self, action: &'static str, scope: &str, rate: Rate) -> Paced {
        let (mut wait, mut paced, mut seen) = self.reserve_slot(action, scope, rate);
        let mut unused = UnusedToken {
            limiter: self,
            action,
            scope,
            armed: true,
        };
        // A call waiting for its slot waits longer when the schedule moved meanwhile (an
        // answer showed the server behind the client): its slot moved with it.
        while !wait.is_zero() {
            tracing::debug!(action, scope, ?wait, "pacing Machines API call");
            tokio::time::sleep(wait).await;
            wait = self.shifted_since(action, scope, seen);
            seen += wait;
            paced.slot += wait;
        }
        unused.armed = false;
        paced
    }

    /// Returns a reserved token that was not used (at most up to a full bucket).
    fn give_back(&self, action: &'static str, scope: &str) {
        let now = Instant::now();
        let mut buckets = self.lock();
        if let Some(b) = buckets.get_mut(&(action, scope.to_owned())) {
            let earlier = b.tat.checked_sub(b.token_time()).unwrap_or(now);
            b.tat = earlier.max(now);
        }
    }
}

/// A token reserved by a waiting [`Limiter::acquire`]: given back if the wait is dropped.
struct UnusedToken<'a> {
    limiter: &'a Limiter,
    action: &'static str,
    scope: &'a str,
    armed: bool,
}

impl Drop for UnusedToken<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.limiter.give_back(self.action, self.scope);
        }
    }
}

/// The first of `names` present as a non-negative number (the IETF draft's fields are
/// integers; a list such as `RateLimit-Remaining: 0, 10;w=1` is read by its first item).
fn header_number(headers: &HeaderMap, names: &[&str]) -> Option<f64> {
    names.iter().find_map(|name| {
        let v = headers.get(*name)?.to_str().ok()?;
        let first = v.split([',', ';']).next()?.trim();
        first
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
    })
}

/// A reset header as a delay: seconds from now, or (a value past 10^9, as some servers send
/// `X-RateLimit-Reset`) a Unix time in seconds.
fn reset_delay(value: f64) -> Duration {
    if value > 1e9 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        Duration::from_secs_f64((value - now).clamp(0.0, 3600.0))
    } else {
        Duration::from_secs_f64(value.min(3600.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_paces() {
        let l = Limiter::default();
        let r = Rate::new(1.0, 3);
        for _ in 0..3 {
            assert_eq!(l.reserve("start", "m1", r), Duration::ZERO);
        }
        let w = l.reserve("start", "m1", r);
        assert!(
            w > Duration::from_millis(900) && w <= Duration::from_secs(1),
            "{w:?}"
        );
        // Another machine has its own bucket.
        assert_eq!(l.reserve("start", "m2", r), Duration::ZERO);
        // Another action too.
        assert_eq!(l.reserve("stop", "m1", r), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(l.reserve("start", "m1", r), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_cut_short_by_a_deadline_give_their_tokens_back() {
        let l = Limiter::default();
        let r = PacingConfig::default().paced(Rate::new(1.0, 1));
        // Calls, one after another, each given 0.5 s (a tick's deadline) for a minute of
        // paused time. A call goes out about every 1.05 s; kept spent, the tokens of the cut
        // waits would push every later token further away and almost none would go out.
        let start = Instant::now();
        let mut sent = 0;
        while start.elapsed() < Duration::from_millis(59_500) {
            let t = tokio::time::timeout(Duration::from_millis(500), l.acquire("create", "app", r));
            if t.await.is_ok() {
                sent += 1;
            }
        }
        // At most the burst plus 0.95/s: 1 + 56 in 59.5 s.
        assert!(
            (50..=57).contains(&sent),
            "{sent} calls in 59.5 s at 0.95/s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_margin_spaces_tokens_a_little_wider_than_the_rate_and_keeps_the_burst() {
        let l = Limiter::default();
        let r = PacingConfig::default().paced(Rate::new(1.0, 3));
        for _ in 0..3 {
            assert_eq!(l.reserve("create", "app", r), Duration::ZERO);
        }
        let w = l.reserve("create", "app", r);
        // 1 / 0.95 s: 52.6 ms of slack over the documented second.
        assert!(
            w > Duration::from_millis(1050) && w < Duration::from_millis(1055),
            "{w:?}"
        );
        let w = l.reserve("create", "app", r);
        assert!(
            w > Duration::from_millis(2100) && w < Duration::from_millis(2110),
            "{w:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_empties_the_bucket_until_retry_after() {
        let l = Limiter::default();
        let r = Rate::new(1.0, 3);
        l.refused("create", "app", r, Some(Duration::from_secs(2)));
        let w = l.reserve("create", "app", r);
        assert!(
            w > Duration::from_millis(1990) && w <= Duration::from_secs(2),
            "{w:?}"
        );
        // Without Retry-After: one token's time.
        l.refused("list", "app", r, None);
        let w = l.reserve("list", "app", r);
        assert!(
            w > Duration::from_millis(990) && w <= Duration::from_secs(1),
            "{w:?}"
        );
        // Other buckets are untouched.
        assert_eq!(l.reserve("create", "other", r), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_headers_lower_the_bucket() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        let l = Limiter::default();
        let r = Rate::new(1.0, 3);
        // None left, reset in 3 s.
        l.observe(
            "create",
            "a",
            r,
            &headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "3")]),
        );
        let w = l.reserve("create", "a", r);
        assert!(
            w > Duration::from_millis(2990) && w <= Duration::from_secs(3),
            "{w:?}"
        );
        // One left (the X- form): one call goes now, the next waits.
        l.observe(
            "create",
            "b",
            r,
            &headers(&[("x-ratelimit-remaining", "1")]),
        );
        assert_eq!(l.reserve("create", "b", r), Duration::ZERO);
        assert!(l.reserve("create", "b", r) > Duration::from_millis(900));
        // More left than the client thinks: the client never raises its own estimate.
        l.observe("create", "c", r, &headers(&[("ratelimit-remaining", "50")]));
        for _ in 0..3 {
            assert_eq!(l.reserve("create", "c", r), Duration::ZERO);
        }
        assert!(l.reserve("create", "c", r) > Duration::from_millis(900));
        // No headers, or unreadable ones: nothing learnt.
        l.observe(
            "create",
            "d",
            r,
            &headers(&[("ratelimit-remaining", "soon")]),
        );
        l.observe("create", "d", r, &HeaderMap::new());
        for _ in 0..3 {
            assert_eq!(l.reserve("create", "d", r), Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_judges_each_bucket_by_its_own_rate() {
        let l = Limiter::default();
        let slow = Rate::new(0.01, 1);
        for i in 0..=EVICT_ABOVE {
            assert_eq!(l.reserve("start", &format!("m{i}"), slow), Duration::ZERO);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        // A fast bucket's call runs the eviction: at 1,000/s every slow bucket would look
        // full again; at its own 0.01/s none is.
        let fast = Rate::new(1000.0, 1);
        assert_eq!(l.reserve("get", "x", fast), Duration::ZERO);
        let w = l.reserve("start", "m0", slow);
        assert!(w > Duration::from_secs(98), "{w:?}");
        // Buckets full at their own rate are forgotten.
        tokio::time::advance(Duration::from_secs(200)).await;
        assert_eq!(l.reserve("get", "y", fast), Duration::ZERO);
        assert!(l.lock().len() < 10, "{}", l.lock().len());
    }

    #[tokio::test(start_paused = true)]
    async fn many_refilling_buckets_are_swept_once_per_interval_not_per_call() {
        let l = Limiter::default();
        // Two seconds to refill a token.
        let list = Rate::new(0.5, 3);
        // 10,000 apps' list buckets, none full again for two seconds: a pass over them all.
        for i in 0..10_000 {
            assert_eq!(l.reserve("list", &format!("app{i}"), list), Duration::ZERO);
        }
        // The map crossed 4,096 and doubled once: at most a few sweeps, not one per call
        // (5,904 without the interval).
        assert!(l.sweeps() <= 3, "{} sweeps", l.sweeps());
        // A second later the sweep runs again and forgets nothing still refilling...
        tokio::time::advance(SWEEP_EVERY).await;
        let before = l.sweeps();
        assert_eq!(l.reserve("list", "app0", list), Duration::ZERO);
        assert_eq!(l.sweeps(), before + 1);
        assert_eq!(l.lock().len(), 10_000);
        // ...and once they are full again, forgets them.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(l.reserve("list", "other", list), Duration::ZERO);
        assert!(l.lock().len() < 10, "{}", l.lock().len());
    }

    /// The server's side: GCRA over arrival times at the documented rate (no margin), as
    /// Fly's proxy counts calls. Returns the arrivals it refuses.
    fn refused_by_server(arrivals: &mut [Instant], rate: Rate) -> usize {
        arrivals.sort();
        let t = Duration::from_secs_f64(1.0 / rate.per_second());
        let tolerance = t.mul_f64(rate.burst() - 1.0);
        let mut tat = arrivals[0];
        let mut refused = 0;
        for &a in arrivals.iter() {
            if tat.saturating_duration_since(a) > tolerance {
                refused += 1;
            } else {
                tat = tat.max(a) + t;
            }
        }
        refused
    }

    /// `delays.len()` calls issued at once (a scale pass's creates for one app), each paced
    /// by the client, then on its way for its delay, answered 20 ms after it arrived (telling
    /// the limiter only when `learn`). Returns the arrival times.
    async fn calls_with_delays(delays: &[Duration], learn: bool) -> Vec<Instant> {
        let l = std::sync::Arc::new(Limiter::default());
        let r = PacingConfig::default().paced(Rate::new(1.0, 3));
        let arrivals = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for &delay in delays {
            let (l, arrivals) = (l.clone(), arrivals.clone());
            tasks.push(tokio::spawn(async move {
                let paced = l.acquire("create", "app", r).await;
                tokio::time::sleep(delay).await;
                arrivals.lock().unwrap().push(Instant::now());
                tokio::time::sleep(Duration::from_millis(20)).await;
                if learn {
                    l.answered("create", "app", paced);
                }
            }));
            // Spawned in order, as the engine sends a plan's calls in order.
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        let v = arrivals.lock().unwrap().clone();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_delayed_on_its_way_does_not_get_the_paced_calls_refused() {
        // The burst goes at once and arrives 300 ms later; the 4th call, paced 1.053 s after
        // the burst was sent, arrives at once. The server's bucket refills from the burst's
        // arrival, the client's (without learning) from its sending: 247 ms short.
        let mut delays = vec![Duration::from_millis(300); 3];
        delays.extend([Duration::ZERO; 3]);
        let r = Rate::new(1.0, 3);
        let mut blind = calls_with_delays(&delays, false).await;
        assert!(
            refused_by_server(&mut blind, r) > 0,
            "the scenario must be one the fixed margin alone gets refused"
        );
        let start = Instant::now();
        let mut learnt = calls_with_delays(&delays, true).await;
        assert_eq!(refused_by_server(&mut learnt, r), 0, "{learnt:?}");
        // And it costs the delay once, not once per call: the 6th call goes about 3 paced
        // tokens (3 × 1.053 s) plus 300 ms after the first.
        let last = *learnt.iter().max().unwrap() - start;
        assert!(last < Duration::from_millis(3_500), "{last:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_delayed_at_random_are_never_refused_once_answers_are_learnt() {
        // 200 scale passes of 2 to 9 calls, each call on its way for 0 to 400 ms (a seeded
        // generator: the same cases every run).
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let r = Rate::new(1.0, 3);
        for case in 0..200 {
            let n = 2 + (next() % 8) as usize;
            let delays: Vec<Duration> = (0..n)
                .map(|_| Duration::from_millis(next() % 401))
                .collect();
            let mut arrivals = calls_with_delays(&delays, true).await;
            assert_eq!(
                refused_by_server(&mut arrivals, r),
                0,
                "case {case}: delays {delays:?}"
            );
            // The bucket is full again before the next case.
            tokio::time::advance(Duration::from_secs(60)).await;
        }
    }

    #[test]
    fn a_margin_is_clamped() {
        let r = Rate::new(2.0, 3);
        assert_eq!(r.with_margin(0.1), Rate::new(1.8, 3));
        assert_eq!(r.with_margin(-1.0), r);
        assert_eq!(r.with_margin(f64::NAN), r);
        assert_eq!(r.with_margin(0.9), Rate::new(1.0, 3));
    }

    #[test]
    fn backoff_is_bounded() {
        let c = RetryConfig::default();
        for retry in 0..40 {
            let b = c.backoff(retry);
            assert!(b <= c.max_backoff, "{b:?}");
            assert!(b <= c.initial_backoff * 2u32.saturating_pow(retry.min(30)));
        }
        let zero = RetryConfig {
            initial_backoff: Duration::ZERO,
            ..RetryConfig::default()
        };
        assert_eq!(zero.backoff(3), Duration::ZERO);
        // A cap beyond u64 nanoseconds (a configured `max_backoff` of centuries) is drawn
        // from without overflowing.
        let huge = RetryConfig {
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            ..RetryConfig::default()
        };
        assert!(huge.backoff(5) <= Duration::from_nanos(u64::MAX));
    }
}
