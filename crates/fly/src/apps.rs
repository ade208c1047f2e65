//! The Fly apps an autoscaler target covers: one named app, or every app of an organization
//! whose name matches a wildcard, each with its own [`FlyScaler`].
//!
//! Both binaries build their targets from [`FlyApps`]: `fly-autoscaler` has one, `fleetscale
//! run` one per `[[target]]`. It owns what is Fly-specific about a target (listing the apps,
//! keeping the last good list when a listing fails, one scaler per app that lives as long as
//! the app is listed); the binaries add policy, sources and their own log lines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fleetscale_core::{Scaler, Scope};

use crate::{
    AppDiscovery, FlyError, FlyGraphql, FlyScaler, FlyScalerConfig, MachinesClient, Wildcard,
};

/// The apps of one listing by [`FlyApps::list`].
#[derive(Debug)]
#[non_exhaustive]
pub struct AppList {
    /// The apps to scale now, sorted (a fixed app: just that one; a wildcard: the matching
    /// apps, or the last good list when [`AppList::refresh_error`] is set).
    pub apps: Vec<String>,
    /// Why the wildcard listing failed, when it did (the caller logs it; `apps` is then the
    /// last good list, empty before the first success).
    pub refresh_error: Option<FlyError>,
    /// True when a wildcard matched no app this time but did (or had not been listed) the
    /// time before: the moment to warn once rather than at every refresh.
    pub newly_empty: bool,
}

/// One app or a wildcard of apps, with one cached [`FlyScaler`] per app.
///
/// Guaranteed: [`FlyApps::scaler`] returns the same scaler for an app until a listing that
/// no longer contains the app ([`FlyApps::list`] drops it, so a deleted and recreated app
/// starts afresh). Errors: only the wildcard listing fails, and it is reported in the
/// [`AppList`], never as an empty list that would look like "no apps".
///
/// ```
/// use fleetscale_fly::apps::FlyApps;
/// use fleetscale_fly::{ClientConfig, MachinesClient};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let client = MachinesClient::new(None, ClientConfig::default()).unwrap();
/// let apps = FlyApps::new(client, "web", "").with_process_group(Some("app".into()));
/// let list = apps.list().await;
/// assert_eq!(list.apps, ["web"]);
/// let scaler = apps.scaler("web").unwrap();
/// assert!(std::sync::Arc::ptr_eq(&scaler, &apps.scaler("web").unwrap()));
/// # }
/// ```
pub struct FlyApps {
    client: MachinesClient,
    pattern: String,
    org: String,
    process_group: Option<String>,
    regions: Vec<String>,
    release_guard: Option<FlyGraphql>,
    discovery: Option<AppDiscovery>,
    matched_none: Mutex<bool>,
    scalers: Mutex<HashMap<String, Arc<dyn Scaler>>>,
}

impl std::fmt::Debug for FlyApps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlyApps")
            .field("pattern", &self.pattern)
            .field("org", &self.org)
            .field("process_group", &self.process_group)
            .finish_non_exhaustive()
    }
}

impl FlyApps {
    /// The app `pattern` (a name, or a wildcard with `*` listed from organization `org`),
    /// managed through `client`.
    pub fn new(client: MachinesClient, pattern: impl Into<String>, org: impl Into<String>) -> Self {
        let pattern = pattern.into();
        let org = org.into();
        let discovery = pattern.contains('*').then(|| {
            AppDiscovery::new(client.clone(), org.clone(), Wildcard::new(pattern.clone()))
        });
        FlyApps {
            client,
            pattern,
            org,
            process_group: None,
            regions: Vec::new(),
            release_guard: None,
            discovery,
            matched_none: Mutex::new(false),
            scalers: Mutex::new(HashMap::new()),
        }
    }

    /// Limits every app's scaler to one process group (`None` or empty: all of them).
    pub fn with_process_group(mut self, group: Option<String>) -> Self {
        self.process_group = group.filter(|g| !g.is_empty());
        self
    }

    /// The regions new machines are spread over (see [`FlyScalerConfig::with_regions`]).
    pub fn with_regions(mut self, regions: Vec<String>) -> Self {
        self.regions = regions;
        self
    }

    /// Pauses each app's scaler while a deploy of it runs (see
    /// [`FlyScaler::with_release_guard`]).
    pub fn with_release_guard(mut self, graphql: FlyGraphql) -> Self {
        self.release_guard = Some(graphql);
        self
    }

    /// The deploy guard every scaler checks, if one was set.
    pub fn release_guard(&self) -> Option<&FlyGraphql> {
        self.release_guard.as_ref()
    }

    /// The app name or wildcard as configured.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The organization wildcards are listed from (may be empty for a named app).
    pub fn org(&self) -> &str {
        &self.org
    }

    /// The process group every scaler is limited to, if any.
    pub fn process_group(&self) -> Option<&str> {
        self.process_group.as_deref()
    }

    /// Whether the pattern is a wildcard (listed from the organization at every call of
    /// [`FlyApps::list`]).
    pub fn is_wildcard(&self) -> bool {
        self.discovery.is_some()
    }

    /// The apps to scale now. A wildcard is listed again (the engine calls this once per
    /// refresh interval); a failed listing keeps the last good list. Scalers of apps no
    /// longer listed are dropped.
    pub async fn list(&self) -> AppList {
        let Some(discovery) = &self.discovery else {
            return AppList {
                apps: vec![self.pattern.clone()],
                refresh_error: None,
                newly_empty: false,
            };
        };
        let (apps, refresh_error) = match discovery.refresh().await {
            Ok(apps) => (apps, None),
            Err(e) => (discovery.current().unwrap_or_default(), Some(e)),
        };
        let newly_empty = {
            let mut none = self.matched_none.lock().unwrap_or_else(|e| e.into_inner());
            let newly = apps.is_empty() && !*none && refresh_error.is_none();
            if refresh_error.is_none() {
                *none = apps.is_empty();
            }
            newly
        };
        self.scalers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|app, _| apps.contains(app));
        AppList {
            apps,
            refresh_error,
            newly_empty,
        }
    }

    /// The scaler of `app`, built on first use and kept while the app is listed.
    ///
    /// # Errors
    /// [`FlyScaler::new`]'s errors (an invalid app name).
    pub fn scaler(&self, app: &str) -> Result<Arc<dyn Scaler>, FlyError> {
        let mut cache = self.scalers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cache.get(app) {
            return Ok(s.clone());
        }
        let config = FlyScalerConfig::new(app)
            .with_process_group(self.process_group.clone())
            .with_regions(self.regions.clone());
        let mut fly = FlyScaler::new(self.client.clone(), config)?;
        if let Some(g) = &self.release_guard {
            fly = fly.with_release_guard(g.clone());
        }
        let s: Arc<dyn Scaler> = Arc::new(fly);
        cache.insert(app.to_owned(), s.clone());
        Ok(s)
    }

    /// The scope of `app`'s target: the app, the process group, `ORG` when one is set.
    pub fn scope(&self, app: &str) -> Scope {
        let mut scope = Scope::new(app);
        if let Some(g) = &self.process_group {
            scope = scope.with_group(g.clone());
        }
        if !self.org.is_empty() {
            scope = scope.with_var("ORG", self.org.clone());
        }
        scope
    }

    /// How many apps have a scaler now.
    pub fn cached_scalers(&self) -> usize {
        self.scalers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(all(test, feature = "fake"))]
mod tests {
    use super::*;
    use crate::fake::{FakeConfig, FakeFlyServer};
    use crate::types::CreateAppRequest;
    use crate::ClientConfig;

    async fn app(client: &MachinesClient, name: &str) {
        client
            .create_app(&CreateAppRequest {
                app_name: name.into(),
                org_slug: "personal".into(),
                network: None,
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_wildcard_lists_matching_apps_and_drops_the_scalers_of_gone_ones() {
        let server = FakeFlyServer::bind("127.0.0.1:0".parse().unwrap(), FakeConfig::default())
            .await
            .unwrap();
        let client =
            MachinesClient::new(None, ClientConfig::default().with_base_url(server.url())).unwrap();
        let apps = FlyApps::new(client.clone(), "web-*", "personal");
        assert!(apps.is_wildcard());
        let first = apps.list().await;
        assert!(first.apps.is_empty() && first.newly_empty && first.refresh_error.is_none());
        assert!(
            !apps.list().await.newly_empty,
            "warned once, not at every refresh"
        );
        app(&client, "web-1").await;
        app(&client, "web-2").await;
        app(&client, "api").await;
        assert_eq!(apps.list().await.apps, ["web-1", "web-2"]);
        let s1 = apps.scaler("web-1").unwrap();
        apps.scaler("web-2").unwrap();
        assert!(Arc::ptr_eq(&s1, &apps.scaler("web-1").unwrap()));
        assert_eq!(apps.cached_scalers(), 2);
        apps.scaler("web-gone").unwrap();
        assert_eq!(apps.cached_scalers(), 3);
        assert_eq!(apps.list().await.apps, ["web-1", "web-2"]);
        assert_eq!(
            apps.cached_scalers(),
            2,
            "the scaler of an app no longer listed is dropped"
        );
        assert!(Arc::ptr_eq(&s1, &apps.scaler("web-1").unwrap()));
    }

    #[tokio::test]
    async fn a_failed_listing_keeps_the_last_good_list_and_reports_the_error() {
        let server = FakeFlyServer::bind("127.0.0.1:0".parse().unwrap(), FakeConfig::default())
            .await
            .unwrap();
        let url = server.url();
        let mut config = ClientConfig::default().with_base_url(url);
        config.retry = crate::RetryConfig::none();
        let client = MachinesClient::new(None, config).unwrap();
        app(&client, "web-1").await;
        let apps = FlyApps::new(client, "web-*", "personal");
        assert_eq!(apps.list().await.apps, ["web-1"]);
        server.shutdown().await;
        let failed = apps.list().await;
        assert!(failed.refresh_error.is_some());
        assert_eq!(failed.apps, ["web-1"]);
        assert!(!failed.newly_empty);
    }

    #[test]
    fn a_named_app_is_its_own_list_and_scope() {
        let client = MachinesClient::new(None, ClientConfig::default()).unwrap();
        let apps = FlyApps::new(client, "web", "acme").with_process_group(Some(String::new()));
        assert!(!apps.is_wildcard());
        assert_eq!(
            apps.process_group(),
            None,
            "an empty group means every group"
        );
        let scope = apps.scope("web");
        assert_eq!(scope.target, "web");
        assert_eq!(scope.group, None);
        assert_eq!(scope.vars.get("ORG").map(String::as_str), Some("acme"));
    }
}
