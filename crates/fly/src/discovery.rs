//! App discovery: the apps of an organization whose names match a wildcard.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::client::MachinesClient;
use crate::error::FlyError;

/// A wildcard over app names: `*` matches any run of characters (including none), everything
/// else is literal, and the whole name must match (anchored). The empty pattern matches every
/// name. This is fly-autoscaler's `FormatWildcardAsRegexp` (`""` → `.*`, `my-app-*` →
/// `^my-app-.*$`, other regex characters escaped), without a regex engine.
///
/// ```
/// use fleetscale_fly::Wildcard;
/// let w = Wildcard::new("my-app-*");
/// assert!(w.matches("my-app-1"));
/// assert!(w.matches("my-app-"));
/// assert!(!w.matches("xmy-app-1"));
/// assert!(Wildcard::new("").matches("anything"));
/// assert!(!Wildcard::new("a.c").matches("abc"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wildcard {
    pattern: String,
}

impl Wildcard {
    /// A wildcard matching names against `pattern` (`*` matches any run of characters).
    pub fn new(pattern: impl Into<String>) -> Self {
        Wildcard {
            pattern: pattern.into(),
        }
    }

    /// The pattern exactly as given to [`Wildcard::new`].
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern contains `*` (fly-autoscaler's "multi-app mode").
    pub fn is_wildcard(&self) -> bool {
        self.pattern.contains('*')
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        if self.pattern.is_empty() {
            return true;
        }
        let parts: Vec<&str> = self.pattern.split('*').collect();
        if parts.len() == 1 {
            return name == self.pattern;
        }
        let first = parts[0];
        let last = parts[parts.len() - 1];
        if !name.starts_with(first) {
            return false;
        }
        let mut rest = &name[first.len()..];
        if rest.len() < last.len() || !rest.ends_with(last) {
            return false;
        }
        rest = &rest[..rest.len() - last.len()];
        for middle in &parts[1..parts.len() - 1] {
            match rest.find(middle) {
                Some(i) => rest = &rest[i + middle.len()..],
                None => return false,
            }
        }
        true
    }
}

/// Lists an organization's apps (`GET /v1/apps?org_slug=`) and keeps those matching a
/// [`Wildcard`]. [`AppDiscovery::refresh`] keeps the last good list when a refresh fails.
#[derive(Debug, Clone)]
pub struct AppDiscovery {
    client: MachinesClient,
    org: String,
    pattern: Wildcard,
    last: Arc<Mutex<Option<Vec<String>>>>,
}

impl AppDiscovery {
    /// Discovery of the apps of `org` matching `pattern`.
    pub fn new(client: MachinesClient, org: impl Into<String>, pattern: Wildcard) -> Self {
        AppDiscovery {
            client,
            org: org.into(),
            pattern,
            last: Arc::new(Mutex::new(None)),
        }
    }

    /// The slug of the organization whose apps are listed.
    pub fn org(&self) -> &str {
        &self.org
    }

    /// The wildcard an app's name must match to be scaled.
    pub fn pattern(&self) -> &Wildcard {
        &self.pattern
    }

    /// Fetches the list once: matching app names, sorted. On success the result becomes
    /// [`AppDiscovery::current`]; on error the previous list is kept and the error returned.
    ///
    /// # Errors
    /// Any [`FlyError`] of the list call.
    pub async fn refresh(&self) -> Result<Vec<String>, FlyError> {
        let list = self.client.list_apps(&self.org).await?;
        let mut names: Vec<String> = list
            .apps
            .into_iter()
            .map(|a| a.name)
            .filter(|n| self.pattern.matches(n))
            .collect();
        names.sort();
        names.dedup();
        match self.last.lock() {
            Ok(mut g) => *g = Some(names.clone()),
            Err(p) => *p.into_inner() = Some(names.clone()),
        }
        Ok(names)
    }

    /// The last successfully fetched list (`None` before the first success).
    pub fn current(&self) -> Option<Vec<String>> {
        match self.last.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Refreshes now and then every `interval` in a background task until `cancel` fires.
    /// The receiver holds the last good list (empty until the first success); a failed
    /// refresh is logged and leaves it unchanged, as fly-autoscaler does.
    pub fn spawn(
        &self,
        interval: Duration,
        cancel: CancellationToken,
    ) -> (watch::Receiver<Vec<String>>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(self.current().unwrap_or_default());
        let this = self.clone();
        let handle = tokio::spawn(async move {
            loop {
                match this.refresh().await {
                    Ok(names) => {
                        tx.send_if_modified(|cur| {
                            if *cur != names {
                                *cur = names;
                                true
                            } else {
                                false
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(org = %this.org, error = %e, "app list update failed; keeping the last good list");
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        });
        (rx, handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_table() {
        let cases = [
            ("", "x", true),
            ("my-app-*", "my-app-1", true),
            ("my-app-*", "my-app", false),
            ("my-app-*", "other-my-app-1", false),
            ("*-worker", "a-worker", true),
            ("*-worker", "a-worker-2", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("[x]", "[x]", true),
            ("[x]", "x", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*", "", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(Wildcard::new(p).matches(n), want, "{p:?} vs {n:?}");
        }
    }
}
