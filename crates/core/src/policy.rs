//! Policies: from metric values and current counts to the [`Targets`] of one tick.
//!
//! A [`Policy`] holds the count rules (expressions), hard limits, anti-flapping settings and the
//! error rule. [`Policy::decide`] is a pure function of its inputs and an explicit
//! [`PolicyState`] (failure counter, cooldown clocks, recommendation history), so every rule can
//! be tested without I/O.
//!
//! # Order of evaluation
//! 1. If a metric failed (or an expression could not be evaluated): the error rule decides —
//!    [`ErrorPolicy::Hold`] keeps the current counts (only the hard floors of [`Limits`] still
//!    apply: a failed metric **never scales in**); [`ErrorPolicy::Fallback`] uses a fixed count
//!    once the failures reach `after_failures` in a row.
//! 2. Otherwise each count rule is evaluated with the variables: every metric by name,
//!    `created_machines`, `started_machines`, `stopped_machines`, `suspended_machines`,
//!    `app_name`.
//! 3. Hard limits clamp both sides ([`Limits::created`], [`Limits::started`]); created counts
//!    are at least 1 when the backend's creates clone a template
//!    ([`Capabilities::create_needs_template`](crate::Capabilities::create_needs_template);
//!    fly-autoscaler's rule: with no machine left there is nothing to clone).
//! 4. The scale-in stabilization window replaces each `max` by the highest `max` recommended in
//!    the window (HPA's behaviour for scale-down).
//! 5. Step limits move each bound at most `max_step_up` above / `max_step_down` below the
//!    current count.
//! 6. While a cooldown runs, targets are held at the current counts (hard limits still apply).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::expr::{Expr, ValueType, Variables};
use crate::{Bounds, Capabilities, Counts, Error, Result, Scope, Targets};

/// Variables every expression can use besides the metrics.
pub const COUNT_VARIABLES: [&str; 4] = [
    "created_machines",
    "started_machines",
    "stopped_machines",
    "suspended_machines",
];

/// The string variable holding the target's name.
pub const APP_NAME_VARIABLE: &str = "app_name";

/// How one count (created or started) is decided.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum CountRule {
    /// No rule: this count is not managed (only hard limits apply).
    #[default]
    Undefined,
    /// One expression sets both min and max.
    Exact(Expr),
    /// Separate min and max expressions.
    Range {
        /// Scale up while below.
        min: Expr,
        /// Scale down while above.
        max: Expr,
    },
}

impl CountRule {
    /// Builds a rule from the three optional settings a user may give for one count, with
    /// fly-autoscaler's validation: a single value cannot be combined with min or max, and min
    /// and max must come together. Empty strings count as not given. `kind` names the count in
    /// messages (`created` or `started`).
    ///
    /// ```
    /// use fleetscale_core::policy::CountRule;
    /// assert!(CountRule::from_settings("created", Some("min(x + 1, 10)"), None, None).is_ok());
    /// let err = CountRule::from_settings("started", None, Some("1"), None).unwrap_err();
    /// assert!(err.to_string().contains("max-started-machine-count"));
    /// ```
    pub fn from_settings(
        kind: &str,
        single: Option<&str>,
        min: Option<&str>,
        max: Option<&str>,
    ) -> Result<CountRule> {
        fn given(s: Option<&str>) -> Option<&str> {
            s.map(str::trim).filter(|s| !s.is_empty())
        }
        match (given(single), given(min), given(max)) {
            (None, None, None) => Ok(CountRule::Undefined),
            (Some(e), None, None) => Ok(CountRule::Exact(Expr::parse(e)?)),
            (Some(_), _, _) => Err(Error::config(format!(
                "cannot specify both {kind}-machine-count and min/max-{kind}-machine-count"
            ))),
            (None, Some(min), Some(max)) => Ok(CountRule::Range {
                min: Expr::parse(min)?,
                max: Expr::parse(max)?,
            }),
            (None, Some(_), None) => Err(Error::config(format!(
                "min-{kind}-machine-count requires max-{kind}-machine-count"
            ))),
            (None, None, Some(_)) => Err(Error::config(format!(
                "max-{kind}-machine-count requires min-{kind}-machine-count"
            ))),
        }
    }

    /// Whether a rule is set.
    pub fn is_defined(&self) -> bool {
        !matches!(self, CountRule::Undefined)
    }

    /// With separate min and max rules that are both constants (no variables), checks that
    /// min is not above max; `kind` names the count (`created`, `started`).
    ///
    /// # Errors
    /// [`Error::Config`]: `created min 5 is greater than created max 2`.
    pub fn check_constant_bounds(&self, kind: &str) -> Result<()> {
        if let CountRule::Range { min, max } = self {
            if min.variables().is_empty() && max.variables().is_empty() {
                let none = Variables::new();
                if let (Ok(lo), Ok(hi)) = (min.eval_count(&none), max.eval_count(&none)) {
                    if lo > hi {
                        return Err(Error::config(format!(
                            "{kind} min {lo} is greater than {kind} max {hi}"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn exprs(&self) -> Vec<&Expr> {
        match self {
            CountRule::Undefined => vec![],
            CountRule::Exact(e) => vec![e],
            CountRule::Range { min, max } => vec![min, max],
        }
    }

    fn evaluate(&self, vars: &Variables) -> Result<Bounds> {
        Ok(match self {
            CountRule::Undefined => Bounds::NONE,
            CountRule::Exact(e) => Bounds::exactly(e.eval_count(vars)?),
            CountRule::Range { min, max } => {
                Bounds::between(min.eval_count(vars)?, max.eval_count(vars)?)
            }
        })
    }
}

/// What to do when a metric cannot be read or an expression cannot be evaluated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum ErrorPolicy {
    /// Keep the current counts; only the hard floors still apply. Never scales in.
    #[default]
    Hold,
    /// Hold until `after_failures` consecutive failed ticks, then use `count` for every defined
    /// rule (like KEDA's `fallback.replicas`).
    Fallback {
        /// Consecutive failed ticks before the fallback applies (at least 1).
        after_failures: u32,
        /// The count every defined rule (created, started) uses once the fallback applies.
        count: u32,
    },
}

/// The longest duration any setting of a policy or an engine may have: 7 days. Longer values
/// are typos (`300h` for `300s`), and durations near `u64::MAX` seconds overflow the clock
/// arithmetic of timers and health checks.
pub const MAX_SETTING_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Hard limits and anti-flapping settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Hard bounds on created machines, applied after the rules.
    pub created: Bounds,
    /// Hard bounds on started machines, applied after the rules.
    pub started: Bounds,
    /// At most this many machines added per tick (per count).
    pub max_step_up: Option<u32>,
    /// At most this many machines removed per tick (per count).
    pub max_step_down: Option<u32>,
    /// After a tick that scaled up, hold for this long.
    #[serde(with = "humantime_serde")]
    pub cooldown_after_scale_up: Duration,
    /// After a tick that scaled down, hold for this long.
    #[serde(with = "humantime_serde")]
    pub cooldown_after_scale_down: Duration,
    /// Scale in only to the highest count recommended within this window.
    #[serde(with = "humantime_serde")]
    pub scale_in_stabilization: Duration,
}

impl Limits {
    /// Checks the limits at load time: no bounds with `min > max`, no duration longer than
    /// [`MAX_SETTING_DURATION`].
    ///
    /// ```
    /// use fleetscale_core::policy::Limits;
    /// use fleetscale_core::Bounds;
    /// let inverted = Limits { created: Bounds::between(5, 2), ..Limits::default() };
    /// assert!(inverted.check().unwrap_err().to_string().contains("created min 5 is greater than created max 2"));
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting.
    pub fn check(&self) -> Result<()> {
        for (name, b) in [("created", self.created), ("started", self.started)] {
            if let (Some(min), Some(max)) = (b.min, b.max) {
                if min > max {
                    return Err(Error::config(format!(
                        "limits: {name} min {min} is greater than {name} max {max}"
                    )));
                }
            }
        }
        for (name, d) in [
            ("cooldown_after_scale_up", self.cooldown_after_scale_up),
            ("cooldown_after_scale_down", self.cooldown_after_scale_down),
            ("scale_in_stabilization", self.scale_in_stabilization),
        ] {
            check_duration(&format!("limits.{name}"), d, true)?;
        }
        Ok(())
    }
}

/// Checks a duration setting: at most [`MAX_SETTING_DURATION`], and not zero unless
/// `zero_ok` (zero turns a cooldown or window off; an interval or timeout of zero is a
/// mistake). `name` is the setting as the user wrote it.
///
/// # Errors
/// [`Error::Config`] naming the setting and the value.
pub fn check_duration(name: &str, d: Duration, zero_ok: bool) -> Result<()> {
    if d.is_zero() && !zero_ok {
        return Err(Error::config(format!("{name} must be greater than zero")));
    }
    if d > MAX_SETTING_DURATION {
        return Err(Error::config(format!(
            "{name} is longer than the maximum of 7 days (168h)"
        )));
    }
    Ok(())
}

/// How one target is scaled: its count rules, hard limits and what a metric failure does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// How many machines should exist.
    pub created: CountRule,
    /// How many machines should run.
    pub started: CountRule,
    /// Hard limits and anti-flapping.
    pub limits: Limits,
    /// What a metric failure does.
    pub on_error: ErrorPolicy,
}

/// Per-target memory of the policy between ticks.
#[derive(Clone, Debug, Default)]
pub struct PolicyState {
    /// Failed ticks in a row (metric or expression failures).
    pub consecutive_failures: u32,
    /// When the last scale-up action succeeded.
    pub last_scale_up: Option<Instant>,
    /// When the last scale-down action succeeded.
    pub last_scale_down: Option<Instant>,
    history: VecDeque<(Instant, Targets)>,
}

impl PolicyState {
    /// Records that actions ran at `now`: restarts the matching cooldown clocks.
    pub fn record_actions(&mut self, now: Instant, scaled_up: bool, scaled_down: bool) {
        if scaled_up {
            self.last_scale_up = Some(now);
        }
        if scaled_down {
            self.last_scale_down = Some(now);
        }
    }
}

/// A metric reading as the policy sees it.
pub type MetricReadings = BTreeMap<String, std::result::Result<f64, String>>;

/// What the policy decided for one tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Decision {
    /// The counts the planner plans for, after limits, windows, steps and cooldowns.
    pub targets: Targets,
    /// The targets the rules produced before limits, windows, steps and cooldowns (`None` when
    /// the rules were not evaluated because of an error).
    pub raw: Option<Targets>,
    /// Whether the targets were held at the current counts (error or cooldown).
    pub held: bool,
    /// What shaped the decision, in order.
    pub notes: Vec<String>,
}

impl Decision {
    /// A decision for `targets` as the rules produced them: not held, without notes (for
    /// observers' tests and replays; the engine's decisions come from [`Policy::decide`]).
    pub fn new(targets: Targets) -> Self {
        Decision {
            targets,
            raw: Some(targets),
            held: false,
            notes: Vec::new(),
        }
    }

    /// Adds a note on what shaped the decision.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

impl Policy {
    /// Every variable name the rules reference.
    pub fn variables(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .created
            .exprs()
            .into_iter()
            .chain(self.started.exprs())
            .flat_map(|e| e.variables())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Checks, at load time, that the rules only use known variables and that no metric shadows
    /// a built-in variable. `metric_names` are the names of the target's metric sources.
    pub fn check(&self, metric_names: &[&str]) -> Result<()> {
        if !self.created.is_defined() && !self.started.is_defined() {
            return Err(Error::config(
                "at least one of created-machine-count or started-machine-count (or their min/max) is required",
            ));
        }
        for name in metric_names {
            if COUNT_VARIABLES.contains(name) || *name == APP_NAME_VARIABLE {
                return Err(Error::config(format!(
                    "metric name `{name}` clashes with the built-in variable of the same name"
                )));
            }
        }
        let known = |v: &str| {
            metric_names.contains(&v) || COUNT_VARIABLES.contains(&v) || v == APP_NAME_VARIABLE
        };
        let type_of = |v: &str| {
            Some(if v == APP_NAME_VARIABLE {
                ValueType::Str
            } else {
                ValueType::Number
            })
        };
        for e in self.created.exprs().into_iter().chain(self.started.exprs()) {
            e.check_variables(&known)?;
            e.check_types(&type_of)?;
            if e.result_type(&type_of)
                .is_some_and(|t| t != ValueType::Number)
            {
                return Err(crate::expr::ExprError {
                    kind: crate::expr::ExprErrorKind::Type,
                    column: Some(1),
                    message: "a machine count must be a number".into(),
                    expression: e.source().to_owned(),
                }
                .into());
            }
        }
        if let ErrorPolicy::Fallback { after_failures, .. } = self.on_error {
            if after_failures == 0 {
                return Err(Error::config("fallback after_failures must be at least 1"));
            }
        }
        self.created.check_constant_bounds("created")?;
        self.started.check_constant_bounds("started")?;
        self.limits.check()
    }

    /// Evaluates only the rules (no limits, no state): what fly-autoscaler's `eval` prints.
    /// Created counts are at least 1 when the backend's creates clone a template
    /// ([`Capabilities::create_needs_template`]): with no machine left, none could be created
    /// again.
    pub fn evaluate_rules(
        &self,
        scope: &Scope,
        counts: &Counts,
        metrics: &BTreeMap<String, f64>,
        capabilities: Capabilities,
    ) -> Result<Targets> {
        let vars = variables(scope, counts, metrics);
        let mut t = Targets {
            created: self.created.evaluate(&vars)?,
            started: self.started.evaluate(&vars)?,
        };
        if capabilities.create_needs_template {
            t.created.min = t.created.min.map(|n| n.max(1));
            t.created.max = t.created.max.map(|n| n.max(1));
        }
        Ok(t)
    }

    /// Decides the targets of one tick for a backend that can do what `capabilities` say.
    /// Pure apart from updating `state`.
    pub fn decide(
        &self,
        scope: &Scope,
        counts: &Counts,
        metrics: &MetricReadings,
        capabilities: Capabilities,
        state: &mut PolicyState,
        now: Instant,
    ) -> Decision {
        let keep_one = capabilities.create_needs_template;
        let mut notes = Vec::new();
        let hold = self.hold_targets(counts, keep_one);

        let failed: Vec<String> = metrics
            .iter()
            .filter_map(|(k, v)| {
                v.as_ref()
                    .err()
                    .map(|e| format!("metric `{k}` failed: {e}"))
            })
            .collect();
        let evaluated = if failed.is_empty() {
            let values: BTreeMap<String, f64> = metrics
                .iter()
                .filter_map(|(k, v)| v.as_ref().ok().map(|v| (k.clone(), *v)))
                .collect();
            self.evaluate_rules(scope, counts, &values, capabilities)
                .map_err(|e| vec![e.to_string()])
        } else {
            Err(failed)
        };

        let raw = match evaluated {
            Ok(t) => {
                state.consecutive_failures = 0;
                t
            }
            Err(errors) => {
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                notes.extend(errors);
                match self.on_error {
                    ErrorPolicy::Fallback {
                        after_failures,
                        count,
                    } if state.consecutive_failures >= after_failures => {
                        notes.push(format!(
                            "{} failed tick(s) in a row: using fallback count {count}",
                            state.consecutive_failures
                        ));
                        let b = |r: &CountRule| {
                            if r.is_defined() {
                                Bounds::exactly(count)
                            } else {
                                Bounds::NONE
                            }
                        };
                        let t = Targets {
                            created: b(&self.created),
                            started: b(&self.started),
                        };
                        return Decision {
                            targets: self.clamp(t, keep_one, &mut notes),
                            raw: None,
                            held: false,
                            notes,
                        };
                    }
                    _ => {
                        notes.push("holding current counts: a failure never scales in".into());
                        return Decision {
                            targets: hold,
                            raw: None,
                            held: true,
                            notes,
                        };
                    }
                }
            }
        };

        let mut t = self.clamp(raw, keep_one, &mut notes);

        // Scale-in stabilization: the highest max recommended within the window wins.
        let window = self.limits.scale_in_stabilization;
        if !window.is_zero() {
            state.history.push_back((now, t));
            while let Some((at, _)) = state.history.front() {
                if now.saturating_duration_since(*at) > window {
                    state.history.pop_front();
                } else {
                    break;
                }
            }
            let stabilize = |get: fn(&Targets) -> Option<u32>| -> Option<u32> {
                state
                    .history
                    .iter()
                    .map(|(_, t)| get(t))
                    .try_fold(0u32, |acc, m| m.map(|m| acc.max(m)))
            };
            let created_max = stabilize(|t| t.created.max);
            let started_max = stabilize(|t| t.started.max);
            if created_max != t.created.max || started_max != t.started.max {
                notes.push(format!(
                    "scale-in stabilized over {}",
                    humantime::format_duration(window)
                ));
            }
            t.created.max = created_max;
            t.started.max = started_max;
        }

        // Step limits.
        let step = |b: &mut Bounds, current: u32| {
            if let (Some(up), Some(min)) = (self.limits.max_step_up, b.min) {
                b.min = Some(min.min(current.saturating_add(up)));
            }
            if let (Some(down), Some(max)) = (self.limits.max_step_down, b.max) {
                b.max = Some(max.max(current.saturating_sub(down)));
            }
        };
        let before = t;
        step(&mut t.created, counts.created);
        step(&mut t.started, counts.started);
        if before != t {
            notes.push("step limit applied".into());
        }

        // Cooldowns.
        let cooling = |last: Option<Instant>, d: Duration| {
            !d.is_zero() && last.is_some_and(|at| now.saturating_duration_since(at) < d)
        };
        if cooling(state.last_scale_up, self.limits.cooldown_after_scale_up)
            || cooling(state.last_scale_down, self.limits.cooldown_after_scale_down)
        {
            notes.push("cooldown: holding current counts".into());
            return Decision {
                targets: hold,
                raw: Some(raw),
                held: true,
                notes,
            };
        }

        Decision {
            targets: t,
            raw: Some(raw),
            held: false,
            notes,
        }
    }

    /// The targets that keep the current counts, with only the hard limits applied.
    fn hold_targets(&self, counts: &Counts, keep_one: bool) -> Targets {
        let hard = |b: Bounds, current: u32| {
            let n = b.nearest(current);
            if n == current {
                Bounds::NONE
            } else {
                Bounds::exactly(n)
            }
        };
        let mut created = self.limits.created;
        if keep_one {
            created.min = Some(created.min.unwrap_or(1).max(1));
        }
        Targets {
            created: hard(created, counts.created),
            started: hard(self.limits.started, counts.started),
        }
    }

    fn clamp(&self, mut t: Targets, keep_one: bool, notes: &mut Vec<String>) -> Targets {
        let clamp_side = |v: Option<u32>, hard: Bounds| v.map(|v| hard.nearest(v));
        for (b, hard, name) in [
            (&mut t.created, self.limits.created, "created"),
            (&mut t.started, self.limits.started, "started"),
        ] {
            let before = *b;
            if b.is_none() {
                *b = hard;
            } else {
                b.min = clamp_side(b.min, hard).or(hard.min);
                b.max = clamp_side(b.max, hard).or(hard.max);
            }
            if let (Some(min), Some(max)) = (b.min, b.max) {
                if min > max {
                    notes.push(format!("{name} min {min} > max {max}: using {max}"));
                    b.min = Some(max);
                }
            }
            if before != *b && !before.is_none() {
                notes.push(format!("{name} bounds clamped by hard limits"));
            }
        }
        if keep_one {
            t.created.min = t.created.min.map(|n| n.max(1));
            t.created.max = t.created.max.map(|n| n.max(1));
        }
        t
    }
}

/// The expression variables of one tick.
pub fn variables(scope: &Scope, counts: &Counts, metrics: &BTreeMap<String, f64>) -> Variables {
    let mut vars = Variables::new();
    for (k, v) in metrics {
        vars.set_number(k.clone(), *v);
    }
    vars.set_number("created_machines", f64::from(counts.created));
    vars.set_number("started_machines", f64::from(counts.started));
    vars.set_number("stopped_machines", f64::from(counts.stopped));
    vars.set_number("suspended_machines", f64::from(counts.suspended));
    vars.set_str(APP_NAME_VARIABLE, scope.app_name().to_owned());
    vars
}
