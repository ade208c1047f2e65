//! Apps and their releases, as the Machines API and the GraphQL API show them.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::machines::FakeMachine;
use super::{random_hex, ApiErr, ApiResult, FakeFly, Inner};
use crate::types::FlyState;

#[derive(Clone, Debug)]
pub(super) struct FakeApp {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) org: String,
    pub(super) machines: BTreeMap<String, FakeMachine>,
    /// The current release (`currentReleaseUnprocessed`); `None` until the first one.
    pub(super) release: Option<FakeRelease>,
}

/// An app's current release as the fake's GraphQL API reports it
/// (`app { currentReleaseUnprocessed { … } }`). Set with [`FakeFly::set_release_status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeRelease {
    /// Release ID.
    pub id: String,
    /// Version, 1 for the app's first release.
    pub version: u64,
    /// `running` during a deploy; `complete`, `failed`, `interrupted` after (flyctl's values).
    pub status: String,
    /// Free text describing the release.
    pub description: String,
    /// Reason (`deploy`).
    pub reason: String,
    /// The image reference the release deployed (`imageRef` in GraphQL answers).
    pub image_ref: String,
    /// Whether it is stable (`complete`).
    pub stable: bool,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// What the GraphQL resolver sees of an app.
#[derive(Clone, Debug)]
pub(crate) struct GqlApp {
    pub id: String,
    pub name: String,
    pub org: String,
    pub release: Option<FakeRelease>,
}

impl FakeFly {
    /// Creates an app directly (as `POST /v1/apps` would). Idempotent.
    pub fn create_app(&self, name: &str, org_slug: &str) {
        let _ = self.lock().create_app(name, org_slug);
    }

    /// Sets the status of `app`'s current release, as `fly deploy` does through the GraphQL API:
    /// - `None`: the app has no release (its machines were created with the Machines API
    ///   only); the API answers `currentReleaseUnprocessed: null`. This is the default.
    /// - `Some(status)`: with no release yet, release v1 gets `status`; when the current
    ///   release is `running` (or already has `status`), its status changes; otherwise (a
    ///   finished release and a new status) a new release, one version up, begins, as a new
    ///   deploy does. So `Some("running")` then `Some("complete")` is one deploy.
    ///
    /// Returns `false` when the app does not exist.
    pub fn set_release_status(&self, app: &str, status: Option<&str>) -> bool {
        let mut g = self.lock();
        let Some(a) = g.apps.get_mut(app) else {
            return false;
        };
        let Some(status) = status else {
            a.release = None;
            return true;
        };
        let image = a
            .machines
            .values()
            .filter_map(|m| m.m.config.as_ref()?.get("image")?.as_str())
            .next_back()
            .unwrap_or("registry.fly.io/app:deployment-1")
            .to_owned();
        match &mut a.release {
            Some(r) if r.status == "running" || r.status == status => {
                r.status = status.to_owned();
                r.stable = status == "complete";
            }
            current => {
                let version = current.as_ref().map_or(1, |r| r.version + 1);
                *current = Some(FakeRelease {
                    id: format!("rel_{}", random_hex(12)),
                    version,
                    status: status.to_owned(),
                    description: "Deploy image".into(),
                    reason: "deploy".into(),
                    image_ref: image,
                    stable: status == "complete",
                    created_at: crate::time::format_rfc3339(SystemTime::now()),
                });
            }
        }
        true
    }

    /// The current release of `app`, if any.
    pub fn release(&self, app: &str) -> Option<FakeRelease> {
        self.lock().apps.get(app)?.release.clone()
    }
}

impl Inner {
    /// A snapshot of an app for the GraphQL resolver.
    pub(crate) fn gql_app(&self, name: &str) -> Option<GqlApp> {
        let a = self.apps.get(name)?;
        Some(GqlApp {
            id: a.id.clone(),
            name: a.name.clone(),
            org: a.org.clone(),
            release: a.release.clone(),
        })
    }

    pub(super) fn create_app(&mut self, name: &str, org: &str) -> ApiResult {
        if name.is_empty() || org.is_empty() {
            return Err(ApiErr::new(422, "app_name and org_slug are required"));
        }
        if self.apps.contains_key(name) {
            return Err(ApiErr::with_status(
                422,
                "Validation failed: Name has already been taken",
                "name_taken",
            ));
        }
        let id = random_hex(12);
        self.apps.insert(
            name.to_owned(),
            FakeApp {
                id: id.clone(),
                name: name.to_owned(),
                org: org.to_owned(),
                machines: BTreeMap::new(),
                release: None,
            },
        );
        Ok((201, app_json(&id, name, org)))
    }

    pub(crate) fn api_create_app(&mut self, body: &Value) -> ApiResult {
        let name = body.get("app_name").and_then(Value::as_str).unwrap_or("");
        let org = body.get("org_slug").and_then(Value::as_str).unwrap_or("");
        self.create_app(name, org)
    }

    pub(crate) fn api_get_app(&mut self, app: &str) -> ApiResult {
        let a = self.app(app)?;
        Ok((200, app_json(&a.id, &a.name, &a.org)))
    }

    pub(crate) fn api_list_apps(&mut self, org: Option<&str>) -> ApiResult {
        let Some(org) = org.filter(|o| !o.is_empty()) else {
            return Err(ApiErr::new(400, "org_slug is required"));
        };
        self.advance();
        let apps: Vec<Value> = self
            .apps
            .values()
            .filter(|a| a.org == org)
            .map(|a| {
                json!({
                    "id": a.id,
                    "name": a.name,
                    "machine_count": a.machines.values().filter(|m| m.m.state != FlyState::Destroyed).count(),
                    "volume_count": 0,
                    "network": "default",
                })
            })
            .collect();
        Ok((200, json!({ "total_apps": apps.len(), "apps": apps })))
    }

    pub(super) fn app(&self, app: &str) -> Result<&FakeApp, ApiErr> {
        self.apps
            .get(app)
            .ok_or_else(|| ApiErr::new(404, format!("app {app} not found")))
    }
}

pub(super) fn app_json(id: &str, name: &str, org: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "organization": { "name": org, "slug": org },
        "status": "deployed",
    })
}
