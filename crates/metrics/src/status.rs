//! [`StatusBoard`]: the daemon's status page (`/` on the metrics port), a person's view of
//! what the autoscaler sees, decides and does.
//!
//! An observer of [`DecisionRecord`]s keeps, per target, the last decision, the last error,
//! the most recent actions and the counts and targets of the last hour, all bounded; the page
//! is rendered from a snapshot on request. The HTML is self-contained (inline CSS and SVG, no
//! script, no external asset, so it works behind any proxy and offline), refreshes itself
//! with `<meta http-equiv="refresh">`, and is laid out for narrow screens first. Every text
//! that comes from a record (target names, messages, reasons) is HTML-escaped.
//!
//! The DOM has stable hooks for tests and scrapers: each target is a
//! `<section class="target" data-target="NAME">`, counts are `<dd data-count="started">`,
//! the decision `<p class="decision">`, reasons `<ul class="reasons">`, the last error
//! `<p class="error">`, actions `<ol class="actions">`, the chart `<svg class="chart">`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use fleetscale_core::record::{DecisionObserver, DecisionRecord, MetricReading, TickStatus};
use fleetscale_core::{Bounds, Counts, Targets};

/// What the page shows and how often it refreshes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusOptions {
    /// The page's title (e.g. the binary's name).
    pub title: String,
    /// How often the browser reloads the page (default 15 s).
    pub refresh: Duration,
    /// The span of the chart (default 1 hour).
    pub window: Duration,
    /// How many recent actions are kept per target (default 20).
    pub recent_actions: usize,
}

impl Default for StatusOptions {
    fn default() -> Self {
        StatusOptions {
            title: "fleetscale".into(),
            refresh: Duration::from_secs(15),
            window: Duration::from_secs(3600),
            recent_actions: 20,
        }
    }
}

/// At most this many chart points per target: one per tick of a 1 s interval for an hour.
const MAX_POINTS: usize = 3600;

/// The last decision of a target, as shown.
#[derive(Clone, Debug, PartialEq)]
pub struct LastDecision {
    /// When the tick started.
    pub at: SystemTime,
    /// The tick's sequence number for this target (1 for the first).
    pub tick: u64,
    /// How it ended (`no_scale`, `scaled`, `held`, `failed`, ...).
    pub status: String,
    /// The inventory's counts that tick (`None` when listing failed).
    pub counts: Option<Counts>,
    /// The counts the policy decided on (`None` when the tick ended before deciding).
    pub targets: Option<Targets>,
    /// Whether the counts were held.
    pub held: bool,
    /// Why: the decision's notes, the plan's notes, a pause or failure.
    pub reasons: Vec<String>,
    /// The metric readings, as `name = value` or `name failed: ...`.
    pub metrics: Vec<String>,
    /// The actions planned (for a dry run) or executed, as text.
    pub planned: usize,
}

/// One recent action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentAction {
    /// When its tick started.
    pub at: SystemTime,
    /// The action (`create (stopped, clone of m1): created 2 < min 3`).
    pub text: String,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// One point of the chart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChartPoint {
    /// When that tick started.
    pub at: SystemTime,
    /// Machines that exist.
    pub created: u32,
    /// Machines started (or starting).
    pub started: u32,
    /// The counts the policy decided on that tick, when it decided.
    pub targets: Option<Targets>,
}

/// Everything the page shows about one target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetView {
    /// The target's name.
    pub name: String,
    /// The target's most recent tick (`None` until its first tick is recorded).
    pub last: Option<LastDecision>,
    /// Its last error and when it happened.
    pub last_error: Option<(SystemTime, String)>,
    /// The most recent actions, newest first.
    pub actions: VecDeque<RecentAction>,
    /// Counts and targets over the window, oldest first.
    pub points: VecDeque<ChartPoint>,
}

/// The status page's observer. See the [module docs](self).
///
/// ```
/// use fleetscale_metrics::status::{StatusBoard, StatusOptions};
/// let board = StatusBoard::new(StatusOptions::default());
/// let html = board.render(std::time::SystemTime::now());
/// assert!(html.starts_with("<!doctype html>"));
/// assert!(html.contains("No tick has finished yet"));
/// ```
#[derive(Debug)]
pub struct StatusBoard {
    options: StatusOptions,
    targets: Mutex<BTreeMap<String, TargetView>>,
}

fn first_error(r: &DecisionRecord) -> Option<String> {
    if let TickStatus::Failed {
        stage,
        kind,
        message,
    } = &r.status
    {
        return Some(format!("tick failed at {stage} ({kind}): {message}"));
    }
    let metric = r.metrics.iter().find_map(|(name, m)| match m {
        MetricReading::Failed { kind, message } => {
            Some(format!("metric {name} failed ({kind}): {message}"))
        }
        MetricReading::Value(_) => None,
    });
    let action = r.outcomes.iter().find_map(|o| {
        o.error.as_ref().map(|e| {
            format!(
                "{} failed at {} ({}): {}",
                o.action, e.step, e.kind, e.message
            )
        })
    });
    let reclaim = r.reclaims.iter().find_map(|(member, res)| {
        res.as_ref()
            .err()
            .map(|e| format!("reclaim of {member} failed: {e}"))
    });
    action.or(metric).or(reclaim)
}

impl StatusBoard {
    /// A board that knows no target yet, showing pages as `options` say.
    pub fn new(options: StatusOptions) -> Self {
        StatusBoard {
            options,
            targets: Mutex::new(BTreeMap::new()),
        }
    }

    /// The page settings this board was built with (title, refresh, window, actions shown).
    pub fn options(&self) -> &StatusOptions {
        &self.options
    }

    /// A copy of what the page shows, by target name.
    pub fn snapshot(&self) -> Vec<TargetView> {
        self.targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The page at `now`.
    pub fn render(&self, now: SystemTime) -> String {
        render_html(&self.snapshot(), &self.options, now)
    }
}

impl DecisionObserver for StatusBoard {
    fn observe(&self, r: &DecisionRecord) {
        let mut reasons: Vec<String> = Vec::new();
        match &r.status {
            TickStatus::Paused { reason } => reasons.push(format!("paused: {reason}")),
            TickStatus::Failed { stage, message, .. } => {
                reasons.push(format!("failed at {stage}: {message}"))
            }
            _ => {}
        }
        if let Some(d) = &r.decision {
            reasons.extend(d.notes.iter().cloned());
        }
        if let Some(p) = &r.plan {
            reasons.extend(p.notes.iter().cloned());
        }
        let metrics = r
            .metrics
            .iter()
            .map(|(name, m)| match m {
                MetricReading::Value(v) => format!("{name} = {v}"),
                MetricReading::Failed { message, .. } => format!("{name} failed: {message}"),
            })
            .collect();
        let targets = r.decision.as_ref().map(|d| d.targets);
        let last = LastDecision {
            at: r.started_at,
            tick: r.tick,
            status: r.status.as_str().to_owned(),
            counts: r.counts,
            targets,
            held: r.decision.as_ref().is_some_and(|d| d.held),
            reasons,
            metrics,
            planned: r.plan.as_ref().map_or(0, |p| p.actions.len()),
        };
        let error = first_error(r);
        let mut all = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        let view = all.entry(r.target.clone()).or_insert_with(|| TargetView {
            name: r.target.clone(),
            ..TargetView::default()
        });
        view.last = Some(last);
        if let Some(e) = error {
            view.last_error = Some((r.started_at, e));
        }
        for o in &r.outcomes {
            view.actions.push_front(RecentAction {
                at: r.started_at,
                text: o.action.to_string(),
                error: o
                    .error
                    .as_ref()
                    .map(|e| format!("{} ({}): {}", e.step, e.kind, e.message)),
            });
        }
        view.actions.truncate(self.options.recent_actions);
        if let Some(c) = r.counts {
            view.points.push_back(ChartPoint {
                at: r.started_at,
                created: c.created,
                started: c.started,
                targets,
            });
        }
        let horizon = r.started_at.checked_sub(self.options.window);
        while view.points.len() > MAX_POINTS
            || view
                .points
                .front()
                .is_some_and(|p| horizon.is_some_and(|h| p.at < h))
        {
            view.points.pop_front();
        }
        // Targets that stopped ticking (a wildcard app that went away) leave after two windows.
        if let Some(stale) = r.started_at.checked_sub(self.options.window * 2) {
            all.retain(|_, v| v.last.as_ref().is_some_and(|l| l.at >= stale));
        }
    }
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn clock(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // `2026-01-05T12:00:00Z` -> `12:00:00`
    s.get(11..19).map_or(s.clone(), str::to_owned)
}

fn bounds(b: Bounds) -> String {
    match (b.min, b.max) {
        (None, None) => "any".into(),
        (Some(a), Some(z)) if a == z => a.to_string(),
        (a, z) => format!(
            "{}–{}",
            a.map_or("0".into(), |v| v.to_string()),
            z.map_or("∞".into(), |v| v.to_string())
        ),
    }
}

const STYLE: &str = "
:root{color-scheme:light dark;--fg:#1b1f24;--muted:#57606a;--bg:#fff;--card:#f6f8fa;--line:#d0d7de;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;--card:#161b22;--line:#30363d;--ok:#3fb950;--bad:#f85149;--warn:#d29922}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:12px 16px;border-bottom:1px solid var(--line)}
h1{font-size:20px;margin:0}
header p{margin:2px 0 0;color:var(--muted);font-size:13px}
main{padding:12px;display:grid;gap:12px;grid-template-columns:repeat(auto-fill,minmax(min(100%,460px),1fr))}
.target{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px;min-width:0}
h2{font-size:17px;margin:0 0 8px;overflow-wrap:anywhere}
h3{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:12px 0 4px}
.badge{font-size:12px;font-weight:600;border-radius:10px;padding:1px 8px;margin-left:6px;border:1px solid var(--line);vertical-align:middle}
.s-scaled,.s-no_scale{color:var(--ok)}.s-failed{color:var(--bad)}.s-held,.s-paused,.s-dry_run{color:var(--warn)}
.counts{display:grid;grid-template-columns:repeat(4,1fr);gap:6px;margin:0}
.counts div{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:4px 6px;text-align:center}
.counts dt{font-size:11px;color:var(--muted)}.counts dd{margin:0;font-size:20px;font-weight:600}
ul,ol{margin:0;padding-left:18px}li{overflow-wrap:anywhere}
.error{color:var(--bad);overflow-wrap:anywhere}.none{color:var(--muted)}
.actions time,.decision time{color:var(--muted);font-variant-numeric:tabular-nums}
.failed{color:var(--bad)}
svg.chart{width:100%;height:auto;display:block;background:var(--bg);border:1px solid var(--line);border-radius:6px}
.legend{font-size:12px;color:var(--muted);display:flex;flex-wrap:wrap;gap:10px;margin-top:4px}
.legend i{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:4px}
";

const C_CREATED: &str = "#1f6feb";
const C_STARTED: &str = "#2da44e";
const C_TARGET: &str = "#8250df";

/// The chart of the last window: created and started counts, the created target (min), as
/// step lines in an inline SVG.
fn chart(points: &VecDeque<ChartPoint>, window: Duration, now: SystemTime) -> String {
    // A daemon that started minutes ago shows those minutes, not a line at the right edge.
    let covered = points
        .front()
        .and_then(|p| now.duration_since(p.at).ok())
        .unwrap_or(window);
    let window = covered.clamp(Duration::from_secs(60), window.max(Duration::from_secs(60)));
    let window = Duration::from_secs(window.as_secs().div_ceil(60) * 60);
    const W: f64 = 600.0;
    const H: f64 = 160.0;
    const PAD: f64 = 22.0;
    let from = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
    let x = |t: SystemTime| {
        let s = t.duration_since(from).unwrap_or_default().as_secs_f64();
        PAD + (s / window.as_secs_f64()).clamp(0.0, 1.0) * (W - 2.0 * PAD)
    };
    let target_of = |p: &ChartPoint| {
        p.targets
            .and_then(|t| t.created.min.or(t.created.max))
            .map(f64::from)
    };
    let max = points
        .iter()
        .flat_map(|p| {
            [
                Some(f64::from(p.created)),
                Some(f64::from(p.started)),
                target_of(p),
            ]
        })
        .flatten()
        .fold(1.0_f64, f64::max)
        .ceil();
    let y = |v: f64| H - PAD - v / max * (H - 2.0 * PAD);
    let line = |get: &dyn Fn(&ChartPoint) -> Option<f64>| -> String {
        let mut d = String::new();
        let mut prev: Option<f64> = None;
        for p in points {
            match (get(p), prev) {
                (Some(v), Some(pv)) => {
                    let _ = write!(
                        d,
                        " L{:.1},{:.1} L{:.1},{:.1}",
                        x(p.at),
                        y(pv),
                        x(p.at),
                        y(v)
                    );
                }
                (Some(v), None) => {
                    let _ = write!(d, " M{:.1},{:.1}", x(p.at), y(v));
                }
                (None, _) => {}
            }
            prev = get(p).or(prev);
        }
        if let Some(pv) = prev {
            let _ = write!(d, " L{:.1},{:.1}", x(now), y(pv));
        }
        d
    };
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"machines and targets over the last {}\">",
        humantime::format_duration(window)
    );
    let _ = write!(
        svg,
        "<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"currentColor\" stroke-opacity=\".3\"/>\
         <text x=\"2\" y=\"{t}\" font-size=\"11\" fill=\"currentColor\" fill-opacity=\".6\">{max}</text>\
         <text x=\"2\" y=\"{b}\" font-size=\"11\" fill=\"currentColor\" fill-opacity=\".6\">0</text>\
         <text x=\"{PAD}\" y=\"{l}\" font-size=\"11\" fill=\"currentColor\" fill-opacity=\".6\">-{}</text>\
         <text x=\"{r}\" y=\"{l}\" font-size=\"11\" text-anchor=\"end\" fill=\"currentColor\" fill-opacity=\".6\">now</text>",
        humantime::format_duration(window),
        b = H - PAD,
        t = PAD + 4.0,
        r = W - PAD,
        l = H - 6.0,
    );
    for (class, color, dash, get) in [
        (
            "target",
            C_TARGET,
            " stroke-dasharray=\"5 4\"",
            &target_of as &dyn Fn(&ChartPoint) -> Option<f64>,
        ),
        ("created", C_CREATED, "", &|p: &ChartPoint| {
            Some(f64::from(p.created))
        }),
        ("started", C_STARTED, "", &|p: &ChartPoint| {
            Some(f64::from(p.started))
        }),
    ] {
        let d = line(get);
        if !d.is_empty() {
            let _ = write!(
                svg,
                "<path class=\"{class}\" d=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>",
                d.trim()
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn target_html(out: &mut String, v: &TargetView, options: &StatusOptions, now: SystemTime) {
    let name = escape(&v.name);
    let status = v.last.as_ref().map_or("waiting", |l| l.status.as_str());
    let _ = write!(
        out,
        "<section class=\"target\" data-target=\"{name}\" id=\"target-{name}\">\
         <h2>{name}<span class=\"badge s-{status}\" data-status=\"{status}\">{}</span></h2>",
        status.replace('_', " ")
    );
    let c = v.last.as_ref().and_then(|l| l.counts);
    out.push_str("<dl class=\"counts\">");
    for (key, label, value) in [
        ("created", "machines", c.map(|c| c.created)),
        ("started", "started", c.map(|c| c.started)),
        ("stopped", "stopped", c.map(|c| c.stopped)),
        ("suspended", "suspended", c.map(|c| c.suspended)),
        ("never_started", "never started", c.map(|c| c.never_started)),
        ("failed", "failed", c.map(|c| c.failed)),
        ("transitioning", "in transition", c.map(|c| c.transitioning)),
        ("unmanageable", "not managed", c.map(|c| c.unmanageable)),
    ] {
        let _ = write!(
            out,
            "<div><dt>{label}</dt><dd data-count=\"{key}\">{}</dd></div>",
            value.map_or("–".into(), |n| n.to_string())
        );
    }
    out.push_str("</dl><h3>Last decision</h3>");
    match &v.last {
        None => out.push_str("<p class=\"decision none\">no tick yet</p>"),
        Some(l) => {
            let targets = l.targets.map_or("no decision".to_owned(), |t| {
                format!(
                    "machines {}, started {}",
                    bounds(t.created),
                    bounds(t.started)
                )
            });
            let _ = write!(
                out,
                "<p class=\"decision\">tick {} at <time>{}</time>: {}{}; {} action(s)</p>",
                l.tick,
                clock(l.at),
                escape(&targets),
                if l.held { " (held)" } else { "" },
                l.planned
            );
            if !l.reasons.is_empty() {
                out.push_str("<ul class=\"reasons\">");
                for r in &l.reasons {
                    let _ = write!(out, "<li>{}</li>", escape(r));
                }
                out.push_str("</ul>");
            }
            if !l.metrics.is_empty() {
                out.push_str("<h3>Metrics</h3><ul class=\"metrics\">");
                for m in &l.metrics {
                    let _ = write!(out, "<li>{}</li>", escape(m));
                }
                out.push_str("</ul>");
            }
        }
    }
    out.push_str("<h3>Last error</h3>");
    match &v.last_error {
        None => out.push_str("<p class=\"error none\">none</p>"),
        Some((at, e)) => {
            let _ = write!(
                out,
                "<p class=\"error\"><time>{}</time> {}</p>",
                clock(*at),
                escape(e)
            );
        }
    }
    out.push_str("<h3>Recent actions</h3>");
    if v.actions.is_empty() {
        out.push_str("<p class=\"actions none\">none yet</p>");
    } else {
        out.push_str("<ol class=\"actions\">");
        for a in &v.actions {
            let _ = write!(
                out,
                "<li{}><time>{}</time> {}{}</li>",
                if a.error.is_some() {
                    " class=\"failed\""
                } else {
                    ""
                },
                clock(a.at),
                escape(&a.text),
                a.error
                    .as_ref()
                    .map(|e| format!(" — failed: {}", escape(e)))
                    .unwrap_or_default()
            );
        }
        out.push_str("</ol>");
    }
    let _ = write!(
        out,
        "<h3>Last {}</h3>{}<div class=\"legend\"><span><i style=\"background:{C_CREATED}\"></i>machines</span>\
         <span><i style=\"background:{C_STARTED}\"></i>started</span>\
         <span><i style=\"background:{C_TARGET}\"></i>target machines</span></div></section>",
        humantime::format_duration(options.window),
        chart(&v.points, options.window, now)
    );
}

/// The whole page for `targets` at `now`.
pub fn render_html(targets: &[TargetView], options: &StatusOptions, now: SystemTime) -> String {
    let title = escape(&options.title);
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{}\">\
         <title>{title} status</title><style>{STYLE}</style></head><body>\
         <header><h1>{title}</h1><p id=\"summary\">{} target(s) · page of {} UTC · refreshes every {}</p></header><main>",
        options.refresh.as_secs().max(1),
        targets.len(),
        escape(&humantime::format_rfc3339_seconds(now).to_string()),
        humantime::format_duration(Duration::from_secs(options.refresh.as_secs().max(1)))
    );
    if targets.is_empty() {
        out.push_str("<p class=\"none\">No tick has finished yet.</p>");
    }
    for v in targets {
        target_html(&mut out, v, options, now);
    }
    out.push_str("</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetscale_core::plan::{Action, Plan};
    use fleetscale_core::policy::Decision;
    use fleetscale_core::record::{ActionError, ActionOutcome, ActionStep, TickStage};
    use fleetscale_core::{CreateRequest, ErrorKind, MachineId, MachineState};

    fn record(target: &str, tick: u64, at: SystemTime) -> DecisionRecord {
        let mut r = DecisionRecord::new(target, tick, at);
        r.duration = Duration::from_millis(5);
        r.counts = Some(Counts {
            created: 3,
            started: 2,
            stopped: 1,
            ..Counts::default()
        });
        r.metrics = BTreeMap::from([("load".to_owned(), MetricReading::Value(42.0))]);
        r.decision = Some(
            Decision::new(Targets {
                created: Bounds::exactly(4),
                started: Bounds::NONE,
            })
            .with_note("step limit applied"),
        );
        r.plan = Some(Plan::default());
        r.status = TickStatus::Scaled;
        r
    }

    #[test]
    fn records_become_a_page_with_escaped_text_and_bounded_history() {
        let board = StatusBoard::new(StatusOptions {
            recent_actions: 2,
            window: Duration::from_secs(600),
            ..StatusOptions::default()
        });
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_571_200);
        for i in 0..100u64 {
            let mut r = record("<web>", i + 1, t0 + Duration::from_secs(15 * i));
            let mut outcome = ActionOutcome::new(Action::Create {
                request: CreateRequest::default(),
                reason: format!("created 3 < min {i}"),
            });
            outcome.created = Some(MachineId::new("m9"));
            outcome.error = (i == 99).then(|| {
                ActionError::new(
                    ActionStep::Create,
                    &fleetscale_core::Error::rate_limited("429 & retry", None),
                )
            });
            r.outcomes = vec![outcome];
            board.observe(&r);
        }
        let snap = board.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].actions.len(), 2, "bounded");
        assert!(
            snap[0].points.len() <= 41,
            "a 10-minute window of 15 s ticks"
        );
        let now = t0 + Duration::from_secs(15 * 99);
        let html = board.render(now);
        assert!(html.contains("data-target=\"&lt;web&gt;\""), "escaped name");
        assert!(!html.contains("<web>"));
        assert!(html.contains("429 &amp; retry"));
        assert!(html.contains("<dd data-count=\"started\">2</dd>"));
        assert!(html.contains("machines 4, started any"));
        assert!(html.contains("<li>step limit applied</li>"));
        assert!(html.contains("<li>load = 42</li>"));
        assert!(html.contains("class=\"created\""), "chart lines");
        assert!(html.contains("http-equiv=\"refresh\" content=\"15\""));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external asset"
        );
        assert!(!html.contains("<script"));
    }

    #[test]
    fn the_last_error_stays_until_a_newer_one() {
        let board = StatusBoard::new(StatusOptions::default());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_571_200);
        let mut r = record("web", 1, t0);
        r.metrics.insert(
            "queue".into(),
            MetricReading::Failed {
                kind: ErrorKind::Timeout,
                message: "no answer in 10 s".into(),
            },
        );
        board.observe(&r);
        board.observe(&record("web", 2, t0 + Duration::from_secs(15)));
        let html = board.render(t0 + Duration::from_secs(20));
        assert!(html.contains("metric queue failed (timeout): no answer in 10 s"));
        let mut failed = record("web", 3, t0 + Duration::from_secs(30));
        failed.status = TickStatus::Failed {
            stage: TickStage::List,
            kind: ErrorKind::Unavailable,
            message: "503".into(),
        };
        board.observe(&failed);
        let html = board.render(t0 + Duration::from_secs(31));
        assert!(html.contains("tick failed at list (unavailable): 503"));
        assert!(!html.contains("no answer in 10 s"));
        let _ = MachineState::Started;
    }
}
