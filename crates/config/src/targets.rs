//! The targets of a file for the engine: every Fly app (fixed, or listed again at each refresh
//! for a wildcard) and every EC2 pool, each with its rules, sources and Weave membership.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fleetscale_core::engine::{TargetProvider, TargetSpec};
use fleetscale_core::plan::PlanOptions;
use fleetscale_core::policy::Policy;
use fleetscale_core::{ClusterMembership, Scope};

use crate::error::{ConfigError, Result};
use crate::fly::{overlap, Template};
use crate::schema::{BackendConfig, FileConfig};
use crate::text::{line_col, ConfigText};

/// The targets of a file: fixed apps and wildcards (re-listed at every refresh).
pub struct NativeTargets {
    pub(crate) templates: Vec<Template>,
    /// The EC2 targets.
    pub(crate) ec2: Vec<crate::ec2::Ec2Target>,
    memberships: Mutex<HashMap<String, Arc<dyn ClusterMembership>>>,
    /// Apps claimed by two targets at a refresh, already logged (logged again only once the
    /// conflict has gone away and come back).
    conflicts: Mutex<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for NativeTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeTargets")
            .field("templates", &self.templates.len())
            .finish_non_exhaustive()
    }
}

impl NativeTargets {
    /// Builds every target of `cfg` (sources, policies, clients), checking expressions
    /// against the metric names, the `[engine]` settings, and that no two targets manage the
    /// same machines. Every secret of the file (the Fly tokens, the sources' tokens) is
    /// registered with [`fleetscale_fas::redact`].
    ///
    /// # Errors
    /// Located configuration errors (the line as written in the file); a missing or empty
    /// Fly token; two targets for the same app and process group, or a wildcard that matches
    /// an app another target names.
    pub fn build(
        path: &Path,
        text: &ConfigText,
        cfg: &FileConfig,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NativeTargets> {
        if let Some(engine) = &cfg.engine {
            if let Err((key, message)) = engine.get_ref().check() {
                let at = text.key_offset(engine.span(), key);
                return Err(ConfigError::config(text.located(path, at, &message)));
            }
        }
        let engine = cfg.engine();
        let mut templates: Vec<Template> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut ec2: Vec<crate::ec2::Ec2Target> = Vec::new();
        for t in &cfg.targets {
            let span = t.span();
            let at = span.start;
            let t = t.get_ref();
            let here = |msg: String| ConfigError::config(text.located(path, at, &msg));
            let label = t.name.clone().unwrap_or_else(|| match &t.backend {
                BackendConfig::Fly(fly) => fly.app.clone(),
                BackendConfig::Ec2(pool) => pool.pool.clone(),
            });
            if let BackendConfig::Fly(fly) = &t.backend {
                if fly.app.trim().is_empty() {
                    return Err(here(format!("target {label:?}: backend.app is empty")));
                }
                if fly.app.contains('*') && fly.org.as_deref().unwrap_or("").is_empty() {
                    return Err(here(format!(
                        "target {label:?}: backend.org is required when backend.app has a wildcard"
                    )));
                }
            }
            if let Some(first) = names.insert(label.clone(), at) {
                let (line, _) = line_col(&text.raw, text.raw_offset(first));
                return Err(here(format!(
                    "target {label:?}: a target of this name is already defined at line {line}; names must be unique (set `name`)"
                )));
            }
            let (policy, sources) = crate::validate::target_rules(path, text, t, at, &label)?;
            let fly = match &t.backend {
                BackendConfig::Fly(fly) => fly,
                BackendConfig::Ec2(pool) => {
                    let target = crate::ec2::Ec2Target::new(
                        label.clone(),
                        (**pool).clone(),
                        t,
                        Arc::new(policy),
                        sources,
                        engine.max_actions_per_tick,
                    )
                    .and_then(|e| match ec2.iter().find(|o| o.same_pool(&e)) {
                        Some(o) => Err(o.overlap_message()),
                        None => Ok(e),
                    })
                    .map_err(|m| here(format!("target {label:?}: {m}")))?;
                    ec2.push(target);
                    continue;
                }
            };
            let template = crate::fly::template(
                path,
                text,
                at,
                &label,
                t,
                fly,
                (policy, sources),
                &engine,
                getenv,
            )?;
            if let Some(message) = overlap(&templates, &template) {
                return Err(here(format!("target {label:?}: {message}")));
            }
            templates.push(template);
        }
        Ok(NativeTargets {
            templates,
            ec2,
            memberships: Mutex::new(HashMap::new()),
            conflicts: Mutex::new(std::collections::BTreeSet::new()),
        })
    }
    fn spec(&self, t: &Template, app: &str, name: String) -> fleetscale_core::Result<TargetSpec> {
        let scaler = t.apps.scaler(app)?;
        // `$APP_NAME` in queries and `app_name` in expressions are the app, whatever the
        // target's display name.
        let mut scope = Scope::new(app).with_var("APP_NAME", app);
        if let Some(g) = t.fly.process_group.clone().filter(|g| !g.is_empty()) {
            scope = scope.with_group(g);
        }
        if let Some(org) = &t.fly.org {
            scope = scope.with_var("ORG", org.clone());
        }
        let membership = match &t.weave {
            None => None,
            Some(w) => {
                let mut cache = self.memberships.lock().unwrap_or_else(|e| e.into_inner());
                match cache.get(&name) {
                    Some(m) => Some(m.clone()),
                    None => {
                        // Peers are bound to this target's machines under its own name.
                        let m: Arc<dyn ClusterMembership> = Arc::new(w.membership(&name)?);
                        cache.insert(name.clone(), m.clone());
                        Some(m)
                    }
                }
            }
        };
        let mut spec = TargetSpec::new(
            Scope {
                target: name,
                ..scope
            },
            scaler,
            Policy::default(),
        )
        .with_shared_policy(t.policy.clone())
        .with_sources(t.sources.clone())
        .with_plan_options(
            PlanOptions::default()
                .with_initial_state(t.initial_state)
                .with_max_actions_per_kind(Some(t.max_actions_per_tick)),
        );
        if let Some(m) = membership {
            spec = spec.with_membership(m);
        }
        Ok(spec)
    }
}

#[async_trait]
impl TargetProvider for NativeTargets {
    /// Every fixed target, and for wildcards every matching app (the last good list when a
    /// refresh fails).
    ///
    /// An app matched by two targets whose process groups overlap (two different wildcards)
    /// is kept with the first of them and skipped by the other, with an ERROR once; a
    /// wildcard that matches no app says so at WARN once.
    async fn targets(&self) -> fleetscale_core::Result<Vec<TargetSpec>> {
        let mut out = Vec::new();
        // (app, template index) of every app taken so far.
        let mut taken: Vec<(String, usize)> = Vec::new();
        let mut conflicts = std::collections::BTreeSet::new();
        for (i, t) in self.templates.iter().enumerate() {
            let list = t.apps.list().await;
            if let Some(e) = &list.refresh_error {
                tracing::error!(pattern = %t.fly.app, err = %e, "app list update failed; keeping the last good list");
            }
            if list.newly_empty {
                tracing::warn!(
                    target_name = %t.label(),
                    pattern = %t.fly.app,
                    org = %t.apps.org(),
                    "app pattern {:?} matches no app of organization {:?}: nothing to scale for target {:?}",
                    t.fly.app,
                    t.apps.org(),
                    t.label()
                );
            }
            for app in list.apps {
                if let Some((_, j)) = taken
                    .iter()
                    .find(|(a, j)| *a == app && self.templates[*j].shares_machines_with(t))
                {
                    let key = format!("{app}\u{0}{i}");
                    let logged = self
                        .conflicts
                        .lock()
                        .map(|c| c.contains(&key))
                        .unwrap_or(true);
                    if !logged {
                        tracing::error!(
                            app = %app,
                            "app {app:?} is matched by target {:?} and by target {:?}, whose process groups overlap: only {:?} manages it",
                            self.templates[*j].label(),
                            t.label(),
                            self.templates[*j].label()
                        );
                    }
                    conflicts.insert(key);
                    continue;
                }
                taken.push((app.clone(), i));
                let name = match (&t.name, t.apps.is_wildcard()) {
                    (Some(n), true) => format!("{n}/{app}"),
                    (Some(n), false) => n.clone(),
                    (None, _) => app.clone(),
                };
                out.push(self.spec(t, &app, name)?);
            }
        }
        if let Ok(mut c) = self.conflicts.lock() {
            *c = conflicts;
        }
        for e in &self.ec2 {
            out.push(e.spec().await?);
        }
        // The membership of a target whose app is no longer listed goes with it.
        self.memberships
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| out.iter().any(|spec| spec.scope.target == *name));
        Ok(out)
    }
}
