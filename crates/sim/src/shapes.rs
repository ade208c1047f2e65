//! Synthetic load shapes: the demo's scenario and a day of diurnal traffic (the trace shipped
//! in `traces/diurnal-day.csv` is [`diurnal_day`]'s output, written by [`diurnal_trace`]).

use std::collections::BTreeMap;

use crate::trace::Trace;

/// The demo's traffic at `p` ∈ [0, 1] of its scenario: quiet (8), a ramp to `peak`, a
/// plateau, a decline and quiet again (smoothstep ramps).
///
/// ```
/// use fleetscale_sim::shapes::demo_traffic;
/// assert_eq!(demo_traffic(0.0, 230.0), 8.0);
/// assert_eq!(demo_traffic(0.4, 230.0), 230.0);
/// assert_eq!(demo_traffic(1.0, 230.0), 8.0);
/// ```
pub fn demo_traffic(p: f64, peak: f64) -> f64 {
    let quiet = 8.0;
    let ramp = |a: f64, b: f64, x: f64| ((x - a) / (b - a)).clamp(0.0, 1.0);
    let up = ramp(0.05, 0.33, p);
    let down = ramp(0.45, 0.62, p);
    let shape = up * (1.0 - down);
    quiet + (peak - quiet) * shape * shape * (3.0 - 2.0 * shape)
}

/// A reproducible pseudo-random number in [0, 1) for `i` (SplitMix64): the same on every
/// machine, unlike a seeded generator whose algorithm may change between versions.
fn unit_noise(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The load (concurrent requests of a whole app) at `seconds` after midnight UTC, sample
/// index `i` seeding the noise: 6 at night, a morning ramp to about 196 at 13:00, an evening
/// shoulder of about 80 at 20:00, a 4-minute burst of +90 from 09:30, and ±5 % of noise;
/// rounded to 0.1.
///
/// ```
/// use fleetscale_sim::shapes::diurnal_load;
/// assert!(diurnal_load(4 * 3600, 0) < 8.0);
/// assert!(diurnal_load(13 * 3600, 0) > 170.0);
/// ```
pub fn diurnal_load(seconds: u32, i: u64) -> f64 {
    let h = f64::from(seconds) / 3600.0;
    let bump = |center: f64, width: f64, height: f64| {
        // Wrap around midnight so the evening reaches into the night.
        let d = (h - center).abs().min(24.0 - (h - center).abs());
        height * (-(d / width).powi(2)).exp()
    };
    let mut load = 6.0 + bump(13.0, 3.2, 190.0) + bump(20.0, 1.8, 75.0);
    if (9.5..9.5 + 4.0 / 60.0).contains(&h) {
        load += 90.0;
    }
    let noise = 1.0 + 0.1 * (unit_noise(i) - 0.5);
    (load * noise * 10.0).round() / 10.0
}

/// One day of [`diurnal_load`] from `start_unix` (a UTC midnight, seconds) every `step`
/// seconds, as `(Unix milliseconds, load)`.
pub fn diurnal_day(start_unix: i64, step: u32) -> Vec<(i64, f64)> {
    let step = step.max(1);
    (0..86_400 / step)
        .map(|k| {
            let s = k * step;
            (
                (start_unix + i64::from(s)) * 1000,
                diurnal_load(s, u64::from(k)),
            )
        })
        .collect()
}

/// [`diurnal_day`] as a [`Trace`] with one column, `load`.
pub fn diurnal_trace(start_unix: i64, step: u32) -> Trace {
    let day = diurnal_day(start_unix, step);
    let timestamps = day.iter().map(|(t, _)| *t).collect();
    let mut series = BTreeMap::new();
    series.insert(
        "load".to_owned(),
        day.iter().map(|(_, v)| Some(*v)).collect(),
    );
    // Increasing timestamps, one identifier, finite values: always valid.
    Trace::new(timestamps, series).unwrap_or_default()
}

/// Monday 5 January 2026, 00:00 UTC: the day of the shipped trace.
pub const SHIPPED_DAY: i64 = 1_767_571_200;

/// The step of the shipped trace, seconds.
pub const SHIPPED_STEP: u32 = 15;
