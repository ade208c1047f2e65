//! Server-side rate limits: a token bucket per action and machine (or app), as Fly documents them.

use std::time::Instant;

use super::{FakeFly, Inner};
use crate::pacing::Rate;

/// Server-side rate limits of the fake (Fly's documented numbers by default).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FakeRateLimits {
    /// Per action and machine (start, stop, suspend, destroy, wait, lease, cordon).
    pub machine_action: Rate,
    /// `GET` of one machine.
    pub get_machine: Rate,
    /// Creates per app.
    pub create: Rate,
    /// Listing machines per app, listing apps per org.
    pub app_action: Rate,
}

impl Default for FakeRateLimits {
    fn default() -> Self {
        FakeRateLimits {
            machine_action: Rate::new(1.0, 3),
            get_machine: Rate::new(5.0, 10),
            create: Rate::new(1.0, 3),
            app_action: Rate::new(1.0, 3),
        }
    }
}

#[derive(Debug)]
pub(super) struct Bucket {
    pub(super) tokens: f64,
    pub(super) last: Instant,
}

impl FakeFly {
    /// Turns server-side rate limits on (`Some`) or off.
    pub fn set_rate_limits(&self, limits: Option<FakeRateLimits>) {
        let mut g = self.lock();
        g.config.rate_limits = limits;
        g.buckets.clear();
    }
}

impl Inner {
    /// Server-side rate limiting: `Some(retry_after_secs)` when over the limit.
    pub(crate) fn rate_limited(&mut self, method: &str, path: &str) -> Option<u64> {
        let limits = self.config.rate_limits?;
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (action, scope, rate) = match (method, segs.as_slice()) {
            ("GET", ["v1", "apps"]) => ("apps".to_owned(), "org".to_owned(), limits.app_action),
            ("GET", ["v1", "apps", app]) => {
                ("get_app".into(), (*app).to_owned(), limits.app_action)
            }
            ("GET", ["v1", "apps", app, "machines"]) => {
                ("list".into(), (*app).to_owned(), limits.app_action)
            }
            ("POST", ["v1", "apps", app, "machines"]) => {
                ("create".into(), (*app).to_owned(), limits.create)
            }
            ("GET", ["v1", "apps", _, "machines", id]) => {
                ("get".into(), (*id).to_owned(), limits.get_machine)
            }
            ("DELETE", ["v1", "apps", _, "machines", id]) => {
                ("destroy".into(), (*id).to_owned(), limits.machine_action)
            }
            (m, ["v1", "apps", _, "machines", id, action]) => (
                format!("{m} {action}"),
                (*id).to_owned(),
                limits.machine_action,
            ),
            _ => return None,
        };
        let now = Instant::now();
        let per_second = rate.per_second.max(0.001);
        let burst = f64::from(rate.burst.max(1));
        let b = self.buckets.entry((action, scope)).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * per_second).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            Some(((1.0 - b.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}
