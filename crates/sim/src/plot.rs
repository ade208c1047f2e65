//! `plot.svg` and `plot.png`: the load, and for each replay the machines by state, the
//! targets and the actions over time.
//!
//! Drawn with `plotters` (pure Rust): SVG by its SVG backend, PNG by its bitmap backend and
//! `image`'s PNG encoder, text with `ab_glyph` and a subset of DejaVu Sans compiled into the
//! crate (`assets/`, Bitstream Vera licence), so nothing is read from the system: no font
//! library, no font file, no fontconfig. The output depends only on the replays.

use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use fleetscale_core::plan::ActionKind;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Result, SimError};
use crate::fleet::SimState;
use crate::replay::{Actor, Frame, Replay};
use crate::trace::format_time;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

/// Width of the plots in pixels.
pub const WIDTH: u32 = 1200;
const LOAD_HEIGHT: u32 = 260;
const PANEL_HEIGHT: u32 = 340;

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and parses: registration cannot fail in practice; if it
        // did, drawing text would report the missing font as a plot error.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// The plot's height for `runs` replays.
pub fn height(runs: usize) -> u32 {
    LOAD_HEIGHT + PANEL_HEIGHT * runs.max(1) as u32
}

const STARTED: RGBColor = RGBColor(46, 139, 87);
const STARTING: RGBColor = RGBColor(144, 208, 144);
const SPARE: RGBColor = RGBColor(170, 178, 189);
const MOVING: RGBColor = RGBColor(244, 164, 96);
const LOAD: RGBColor = RGBColor(31, 119, 180);
const TARGET: RGBColor = RGBColor(20, 20, 120);
const NEEDED: RGBColor = RGBColor(200, 30, 30);

fn hours(at_ms: i64, t0: i64) -> f64 {
    (at_ms - t0) as f64 / 3_600_000.0
}

/// A step function through `points` (each value holds until the next point, the last until
/// `end`), with runs of equal values merged.
fn steps(points: &[(f64, f64)], end: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut last: Option<f64> = None;
    for &(x, y) in points {
        if last != Some(y) {
            if let Some(prev) = last {
                out.push((x, prev));
            }
            out.push((x, y));
            last = Some(y);
        }
    }
    if let Some(prev) = last {
        out.push((end, prev));
    }
    out
}

fn census_sum(f: &Frame, states: &[SimState]) -> f64 {
    states
        .iter()
        .map(|s| f64::from(f.census.get(s).copied().unwrap_or(0)))
        .sum()
}

const LAYERS: [(&str, RGBColor, &[SimState]); 4] = [
    ("started", STARTED, &[SimState::Started]),
    ("starting", STARTING, &[SimState::Starting]),
    (
        "spare (created, stopped, suspended)",
        SPARE,
        &[SimState::Created, SimState::Stopped, SimState::Suspended],
    ),
    (
        "creating, stopping, destroying",
        MOVING,
        &[SimState::Creating, SimState::Stopping, SimState::Destroying],
    ),
];

struct Span {
    t0: i64,
    end: f64,
}

fn x_label(t0: i64, x: f64) -> String {
    let t = format_time(t0 + (x * 3_600_000.0).round() as i64);
    // `2026-01-01T13:45:00Z` -> `13:45`
    t.get(11..16).unwrap_or(&t).to_owned()
}

fn draw_load<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    replays: &[&Replay],
    span: &Span,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let first = replays[0];
    let load_name = first
        .summary
        .proxy
        .as_ref()
        .map_or("load".to_owned(), |p| p.load_metric.clone());
    let points: Vec<(f64, f64)> = first
        .frames
        .iter()
        .filter_map(|f| f.load.map(|l| (hours(f.at_ms, span.t0), l)))
        .collect();
    let ymax = points.iter().map(|p| p.1).fold(1.0_f64, f64::max) * 1.1;
    let caption = format!(
        "{} ({}): {} from {}",
        first.summary.target,
        load_name,
        if points.is_empty() {
            "no load metric modelled"
        } else {
            "load"
        },
        first.summary.history.from
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 18))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..span.end, 0.0..ymax)?;
    chart
        .configure_mesh()
        .x_labels(13)
        .x_label_formatter(&|x| x_label(span.t0, *x))
        .y_desc(load_name)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FAMILY, 13))
        .draw()?;
    if !points.is_empty() {
        chart.draw_series(LineSeries::new(
            steps(&points, span.end),
            LOAD.stroke_width(2),
        ))?;
    }
    Ok(())
}

fn draw_run<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    r: &Replay,
    span: &Span,
    y: Range<f64>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let s = &r.summary;
    let a = |k: &str| s.actions.get(k).copied().unwrap_or(0);
    let caption = format!(
        "{}: {:.1} machine-hours started, peak {}, {} create / {} destroy, no spare {}",
        s.label,
        s.machine_hours(SimState::Started),
        s.peak_machines,
        a("create"),
        a("destroy"),
        crate::summary::format_seconds(s.no_spare_seconds)
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..span.end, y.clone())?;
    chart
        .configure_mesh()
        .x_labels(13)
        .x_label_formatter(&|x| x_label(span.t0, *x))
        .y_desc("machines")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FAMILY, 13))
        .draw()?;

    // Stacked areas, drawn top layer first so lower ones cover them.
    for depth in (1..=LAYERS.len()).rev() {
        let (name, color, _) = LAYERS[depth - 1];
        let states: Vec<SimState> = LAYERS[..depth]
            .iter()
            .flat_map(|(_, _, s)| s.iter().copied())
            .collect();
        let points: Vec<(f64, f64)> = r
            .frames
            .iter()
            .map(|f| (hours(f.at_ms, span.t0), census_sum(f, &states)))
            .collect();
        chart
            .draw_series(AreaSeries::new(
                steps(&points, span.end),
                0.0,
                color.mix(0.85),
            ))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }

    // The targets of the created count (min; max when it differs), and of the started count.
    type Pick = fn(&fleetscale_core::Targets) -> Option<u32>;
    let target_lines: [(&str, Pick, ShapeStyle); 4] = [
        (
            "target created min",
            |t| t.created.min,
            TARGET.stroke_width(2),
        ),
        (
            "target created max",
            |t| t.created.max,
            TARGET.mix(0.5).stroke_width(1),
        ),
        (
            "target started min",
            |t| t.started.min,
            NEEDED.mix(0.5).stroke_width(1),
        ),
        (
            "target started max",
            |t| t.started.max,
            NEEDED.mix(0.3).stroke_width(1),
        ),
    ];
    for (i, (name, pick, style)) in target_lines.into_iter().enumerate() {
        let points: Vec<(f64, f64)> = r
            .frames
            .iter()
            .filter_map(|f| {
                f.targets
                    .and_then(|t| pick(&t))
                    .map(|v| (hours(f.at_ms, span.t0), f64::from(v)))
            })
            .collect();
        // The max is drawn only where it adds something: when it differs from the min.
        if points.is_empty() || (i % 2 == 1 && same_as_min(r, i)) {
            continue;
        }
        chart
            .draw_series(LineSeries::new(steps(&points, span.end), style))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], style));
    }

    // Machines the load needs at the soft limit (with the proxy modelled).
    if let Some(p) = &s.proxy {
        let points: Vec<(f64, f64)> = r
            .frames
            .iter()
            .filter_map(|f| {
                f.load
                    .map(|l| (hours(f.at_ms, span.t0), (l / p.soft_limit).ceil()))
            })
            .collect();
        let style = NEEDED.stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(steps(&points, span.end), 4, 3, style))?
            .label(format!("needed at soft limit {}", p.soft_limit))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], style));
    }

    // Actions, as markers above the machines: up for create/start, down for stop/destroy;
    // the autoscaler's dark, Fly Proxy's light.
    let top = y.end - 0.6;
    for (by, row, label) in [
        (Actor::Autoscaler, top, "autoscaler action"),
        (Actor::Proxy, top - 0.9, "Fly Proxy action"),
    ] {
        let color = if by == Actor::Autoscaler {
            BLACK
        } else {
            RGBColor(120, 120, 120)
        };
        let events: Vec<(f64, ActionKind)> = r
            .actions
            .iter()
            .filter(|a| a.by == by)
            .map(|a| (hours(a.at_ms, span.t0), a.kind))
            .collect();
        if events.is_empty() {
            continue;
        }
        chart
            .draw_series(events.iter().map(move |(x, k)| {
                let up = k.is_scale_up();
                let (dy, mark) = if up { (-4, 1) } else { (4, -1) };
                let style = if matches!(k, ActionKind::Create | ActionKind::Destroy) {
                    color.filled()
                } else {
                    color.stroke_width(1)
                };
                EmptyElement::at((*x, row))
                    + Polygon::new(vec![(-4, dy), (4, dy), (0, dy - 8 * mark)], style)
            }))?
            .label(label)
            .legend(move |(x, y)| {
                Polygon::new(
                    vec![(x, y + 4), (x + 8, y + 4), (x + 4, y - 4)],
                    color.filled(),
                )
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FAMILY, 12))
        .draw()?;
    Ok(())
}

fn same_as_min(r: &Replay, i: usize) -> bool {
    r.frames.iter().all(|f| {
        f.targets.is_none_or(|t| {
            if i == 1 {
                t.created.max == t.created.min
            } else {
                t.started.max == t.started.min
            }
        })
    })
}

fn y_range(replays: &[&Replay]) -> Range<f64> {
    let mut max = 1.0_f64;
    for r in replays {
        for f in &r.frames {
            max = max.max(census_sum(f, &SimState::ALL));
            if let Some(t) = f.targets {
                for v in [t.created.min, t.created.max, t.started.min, t.started.max]
                    .into_iter()
                    .flatten()
                {
                    // Targets far above the fleet (an unbounded max) would flatten the plot.
                    if f64::from(v) <= max * 3.0 + 10.0 {
                        max = max.max(f64::from(v));
                    }
                }
            }
            if let (Some(p), Some(l)) = (&r.summary.proxy, f.load) {
                max = max.max((l / p.soft_limit).ceil());
            }
        }
    }
    0.0..(max + 2.5).ceil()
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    replays: &[&Replay],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let first = replays[0];
    let t0 = first.frames.first().map_or(0, |f| f.at_ms);
    let step = (first.summary.history.step_seconds * 1000.0).round() as i64;
    let end = first.frames.last().map_or(t0 + step, |f| f.at_ms + step);
    let span = Span {
        t0,
        end: hours(end, t0).max(1e-6),
    };
    let (top, rest) = root.split_vertically(LOAD_HEIGHT);
    draw_load(&top, replays, &span)?;
    let y = y_range(replays);
    let panels = rest.split_evenly((replays.len(), 1));
    for (area, r) in panels.iter().zip(replays) {
        draw_run(area, r, &span, y.clone())?;
    }
    root.present()?;
    Ok(())
}

fn check(replays: &[&Replay]) -> Result<()> {
    if replays.is_empty() || replays.iter().any(|r| r.frames.is_empty()) {
        return Err(SimError::Plot {
            what: "the plot".into(),
            message: "nothing to draw: no replay or an empty one".into(),
        });
    }
    Ok(())
}

/// The plot as an SVG document (the load on top, then one panel per replay, e.g. two with
/// `--compare`).
///
/// # Errors
/// [`SimError::Plot`] when there is nothing to draw or drawing fails.
pub fn svg(replays: &[&Replay]) -> Result<String> {
    check(replays)?;
    register_font();
    let mut out = String::new();
    {
        let root =
            SVGBackend::with_string(&mut out, (WIDTH, height(replays.len()))).into_drawing_area();
        draw(root, replays).map_err(|e| SimError::Plot {
            what: "plot.svg".into(),
            message: e.to_string(),
        })?;
    }
    Ok(out)
}

/// Writes the plot as a PNG file.
///
/// # Errors
/// [`SimError::Plot`] when there is nothing to draw, drawing fails or the file cannot be
/// written.
pub fn write_png(replays: &[&Replay], path: &Path) -> Result<()> {
    check(replays)?;
    register_font();
    let root = BitMapBackend::new(path, (WIDTH, height(replays.len()))).into_drawing_area();
    draw(root, replays).map_err(|e| SimError::Plot {
        what: path.display().to_string(),
        message: e.to_string(),
    })
}
