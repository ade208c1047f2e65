//! Fly targets: `backend = { type = "fly", … }`, one app or a wildcard of apps with their
//! Machines API client, release guard and token, and the check that no two targets manage the
//! same machines.

use std::path::Path;
use std::sync::Arc;

use fleetscale_core::policy::Policy;
use fleetscale_core::{InitialState, MetricSource};
use fleetscale_fly::apps::FlyApps;
use fleetscale_fly::{ClientConfig, FlyGraphql, GraphqlConfig, MachinesClient, Token, Wildcard};

use crate::error::{ConfigError, Result};
use crate::schema::{EngineSection, FlyBackend, TargetConfig, WeaveSection};
use crate::text::ConfigText;

/// One Fly `[[target]]` as built: the app or wildcard with one scaler per app, its rules and
/// sources; [`crate::NativeTargets`] turns it into one engine target per listed app.
pub(crate) struct Template {
    pub(crate) name: Option<String>,
    pub(crate) fly: FlyBackend,
    /// The Machines API base URL the target's client uses (targets on different APIs never
    /// overlap).
    pub(crate) api: String,
    /// The app or wildcard, with one scaler per app.
    pub(crate) apps: FlyApps,
    pub(crate) policy: Arc<Policy>,
    pub(crate) sources: Vec<Arc<dyn MetricSource>>,
    pub(crate) initial_state: InitialState,
    pub(crate) max_actions_per_tick: u32,
    pub(crate) weave: Option<WeaveSection>,
}

impl Template {
    pub(crate) fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.fly.app.clone())
    }

    /// The process group, `None` for every machine of the app.
    pub(crate) fn group(&self) -> Option<&str> {
        self.fly.process_group.as_deref().filter(|g| !g.is_empty())
    }

    /// Whether this template and `other` would manage the same machines of `app`: same API,
    /// and process groups that overlap (one of them every group, or the same group).
    pub(crate) fn shares_machines_with(&self, other: &Template) -> bool {
        self.api == other.api
            && match (self.group(), other.group()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// The Fly target `t` (labelled `label`, at byte `at` of the expanded text) on `fly`, with its
/// checked `policy` and `sources`: the token is read from `fly.token_env` (and registered with
/// [`fleetscale_fas::redact`]), the API base URLs from the file or the environment.
///
/// # Errors
/// A located message when the token is missing or empty or a client cannot be built.
#[allow(clippy::too_many_arguments)]
pub(crate) fn template(
    path: &Path,
    text: &ConfigText,
    at: usize,
    label: &str,
    t: &TargetConfig,
    fly: &FlyBackend,
    (policy, sources): (Policy, Vec<Arc<dyn MetricSource>>),
    engine: &EngineSection,
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<Template> {
    let here = |msg: String| ConfigError::config(text.located(path, at, &msg));
    // An autoscaler without credentials can do nothing; say so at start, as
    // fly-autoscaler does ("api token required"), rather than at every tick.
    let token = match getenv(&fly.token_env) {
        Some(t) if !fleetscale_fly::token::is_blank(&Token::new(t.as_str())) => {
            fleetscale_fas::redact::register(&t);
            Token::new(t)
        }
        _ => {
            return Err(here(format!(
                "target {label:?}: Fly API token required: set the environment variable {} (backend.token_env names it), e.g. to the output of `fly tokens create deploy -a {}`",
                fly.token_env,
                if fly.app.contains('*') { "<app>" } else { fly.app.as_str() }
            )))
        }
    };
    let token = Some(token);
    let mut cc = ClientConfig::default();
    if let Some(url) = fly
        .base_url
        .clone()
        .or_else(|| getenv(fleetscale_fly::client::BASE_URL_ENV))
        .filter(|u| !u.trim().is_empty())
    {
        cc.base_url = url;
    }
    let api = cc.base_url.trim_end_matches('/').to_owned();
    let release_guard = if fly.release_guard {
        let mut gc = GraphqlConfig::from_getenv(getenv);
        if let Some(url) = fly
            .graphql_base_url
            .clone()
            .filter(|u| !u.trim().is_empty())
        {
            gc.base_url = url;
        }
        Some(
            FlyGraphql::new(token.clone(), gc)
                .map_err(|e| here(format!("target {label:?}: {e}")))?,
        )
    } else {
        None
    };
    let client =
        MachinesClient::new(token, cc).map_err(|e| here(format!("target {label:?}: {e}")))?;
    let mut apps = FlyApps::new(client, fly.app.clone(), fly.org.clone().unwrap_or_default())
        .with_process_group(fly.process_group.clone())
        .with_regions(fly.regions.clone());
    if let Some(g) = release_guard {
        apps = apps.with_release_guard(g);
    }
    let template = Template {
        name: t.name.clone(),
        fly: fly.clone(),
        api,
        apps,
        policy: Arc::new(policy),
        sources,
        initial_state: t.initial_state,
        max_actions_per_tick: engine.max_actions_per_tick,
        weave: t.weave.clone(),
    };
    Ok(template)
}

/// Why `new` would manage machines an earlier template manages, if it would: two fixed
/// targets of one app, a wildcard that matches a named app, or two identical wildcards, with
/// process groups that overlap. (Two different wildcards can match the same app only at run
/// time; [`NativeTargets`] then keeps the app with the first target and logs the conflict.)
pub(crate) fn overlap(earlier: &[Template], new: &Template) -> Option<String> {
    let group = |t: &Template| {
        t.group().map_or("every process group".to_owned(), |g| {
            format!("process group {g:?}")
        })
    };
    for old in earlier.iter().filter(|o| o.shares_machines_with(new)) {
        let (a, b) = (&old.fly.app, &new.fly.app);
        let clash = match (a.contains('*'), b.contains('*')) {
            (false, false) => a == b,
            (true, false) => Wildcard::new(a.clone()).matches(b),
            (false, true) => Wildcard::new(b.clone()).matches(a),
            (true, true) => a == b,
        };
        if clash {
            return Some(format!(
                "manages the same machines as target {:?} (app {b:?}, {}; the other: app {a:?}, {}): two targets would fight over them, each scaling what the other just scaled; give them different apps or different process groups",
                old.label(),
                group(new),
                group(old),
            ));
        }
    }
    None
}
