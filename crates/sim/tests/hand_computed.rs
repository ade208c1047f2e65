//! Fly's "Autoscale Machines" blueprint replayed over 9 samples of the shipped trace (the
//! 09:30 burst), every figure of the summary checked against the hand computation below.

use std::collections::BTreeMap;

use fleetscale_sim::{replay, FleetConfig, ReplayConfig, Trace};

const SHIPPED: &str = include_str!("../traces/diurnal-day.csv");

/// The segment: samples 2276..2285 of the day, 09:29:00 to 09:31:00 UTC, 15 s apart.
/// Loads: 61.8, 64.8, 64.3, 60.6, then the burst: 156.6, 157, 153.7, 154.1, 151.4.
fn segment() -> Trace {
    let day = Trace::from_csv(SHIPPED).unwrap();
    let seg = day.slice(2276, 2285);
    assert_eq!(
        seg.series("load").unwrap(),
        &[61.8, 64.8, 64.3, 60.6, 156.6, 157.0, 153.7, 154.1, 151.4].map(Some)
    );
    assert_eq!(
        fleetscale_sim::format_time(seg.timestamps()[0]),
        "2026-01-05T09:29:00Z"
    );
    seg
}

#[test]
fn the_blueprint_over_the_burst_matches_the_hand_computation() {
    // Proxy: soft limit 20, autostop every 5 min.
    let mut config =
        ReplayConfig::fly_blueprint("blueprint", "my-app", "min(running_machines + 1, 10)")
            .unwrap();
    config.fleet = FleetConfig {
        initial_started: 4,
        ..FleetConfig::default() // create 10 s, start 2 s, stop 5 s, destroy 5 s
    };
    let r = replay(&segment(), &config).unwrap();
    let s = &r.summary;

    // By hand, t in seconds from 09:29:00; the last sample lasts one step, to t = 135.
    // running_machines = machines in `started`; the proxy starts ceil(load / 20) - running
    // spares when load > 20 × running (running = started + starting).
    //
    // t=0   load 61.8 <= 80: no start. Tick: created = min(4 + 1, 10) = 5 > 4 machines:
    //       create m5 (stopped), creating until 10.
    // t=15, 30, 45: load <= 80; ticks: target 5 = 5 machines. Nothing.
    // t=60  load 156.6 > 80: needs ceil(7.83) - 4 = 4, one spare: start m5 (started at 62).
    //       No spare left: a wait begins. Tick: m5 is starting, running_machines = 4,
    //       target 5 = 5 machines: nothing.
    // t=75  157 > 100, no spare. Tick: running_machines = 5, target 6: create m6 (at 85).
    // t=85  m6 ready: the wait ends after 25 s.
    // t=90  153.7 > 100: start m6 (started at 92); a wait begins. Tick: target 6: nothing.
    // t=105 154.1 > 120, no spare. Tick: running_machines = 6, target 7: create m7 (at 115).
    // t=115 m7 ready: the wait ends after 25 s.
    // t=120 151.4 > 120: start m7 (started at 122); a wait begins. Tick: target 7: nothing.
    // t=135 end: the open wait counts 15 s.
    assert_eq!(s.ticks, 9);
    assert_eq!(s.held_ticks, 0);
    assert_eq!(s.failed_metric_reads, 0);
    let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    };
    assert_eq!(
        s.actions,
        counts(&[("create", 3), ("destroy", 0), ("start", 0), ("stop", 0)])
    );
    assert_eq!(s.proxy_actions, counts(&[("start", 3), ("stop", 0)]));
    assert_eq!((s.peak_machines, s.peak_started), (7, 7));

    // Machine-seconds:
    //   started:  m1..m4 4 × 135 = 540, m5 62→135 = 73, m6 92→135 = 43, m7 122→135 = 13: 669
    //   creating: 3 × 10 = 30;  created (spare): m5 10→60, m6 85→90, m7 115→120 = 60
    //   starting: 3 × 2 = 6;    total 765 = 540 + 135 (m5) + 60 (m6) + 30 (m7)
    let ms = |k: &str| s.machine_seconds[k];
    assert_eq!(ms("started"), 669.0);
    assert_eq!(ms("creating"), 30.0);
    assert_eq!(ms("created"), 60.0);
    assert_eq!(ms("starting"), 6.0);
    for k in ["stopping", "stopped", "suspended", "destroying"] {
        assert_eq!(ms(k), 0.0, "{k}");
    }

    // No spare: 0→10 (m5 creating), 60→85, 90→115, 120→135: 10 + 25 + 25 + 15 = 75 s.
    assert_eq!(s.no_spare_seconds, 75.0);
    assert_eq!(s.spare_waits.count, 3);
    assert_eq!(s.spare_waits.longest_seconds, 25.0);
    assert_eq!(s.spare_waits.median_seconds, 25.0);

    // Targets (created min = max): 5 from 0, 6 from 75, 7 from 105. Below the min while the
    // new machine is being created: 0→10, 75→85, 105→115 = 30 s; never above the max; no
    // started bounds.
    assert_eq!(s.below_min_seconds.created, 30.0);
    assert_eq!(s.above_max_seconds.created, 0.0);
    assert_eq!(s.below_min_seconds.started, 0.0);
    assert_eq!(s.above_max_seconds.started, 0.0);
    assert_eq!(s.final_machines["started"], 7);
    assert_eq!(s.ignored_actions, 0);
    assert_eq!(s.history.to, "2026-01-05T09:31:15Z");
}
