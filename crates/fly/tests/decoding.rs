//! Tolerant decoding of Machines API JSON samples (shapes from the Fly docs and fly-go's
//! `machine_types.go`, with the variations seen in the wild).

use fleetscale_fly::types::{AppList, LeaseEnvelope, WaitResponse};
use fleetscale_fly::{Autostop, FlyMachine, FlyState};
use serde_json::json;

/// A full machine as the docs show it, plus what the wild adds: fields this crate does not
/// know, `null` lists, a float timestamp, `u64::MAX` as the version.
fn full_sample() -> serde_json::Value {
    serde_json::from_str(include_str!("fixtures/machine-docs-example.json"))
        .expect("the fixture is JSON")
}

#[test]
fn a_full_machine_decodes_and_keeps_its_raw_config() {
    let v = full_sample();
    let m: FlyMachine = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(m.state, FlyState::Started);
    assert_eq!(m.process_group(), Some("app"));
    assert_eq!(m.metadata("fly_release_version"), Some("12"));
    assert_eq!(
        m.version.as_deref(),
        Some("18446744073709551615"),
        "u64::MAX survives"
    );
    assert_eq!(m.events[0].timestamp, Some(1_698_719_410_123));
    assert_eq!(m.events[1].timestamp, Some(1_698_719_400_000));
    assert_eq!(m.checks[0].status.as_deref(), Some("passing"));
    assert!(m.host_ok());
    assert!(
        m.created_at().unwrap()
            < m.updated_at
                .as_deref()
                .and_then(fleetscale_fly::parse_rfc3339)
                .unwrap()
    );
    let view = m.config_view().unwrap().unwrap();
    assert_eq!(view.services[0].autostop, Some(Autostop::Stop));
    assert_eq!(view.guest.unwrap().memory_mb, Some(256));
    assert!(view.mounts.is_empty(), "mounts: null is an empty list");
    // The raw config is kept byte-for-byte equivalent, unknown fields included.
    assert_eq!(m.config.as_ref().unwrap(), &v["config"]);
    assert_eq!(
        m.image_ref.unwrap().full_ref().unwrap(),
        "registry.fly.io/my-app:deployment-01HBP4@sha256:e9d7c1b5c5c4fcf6c4a1b8dcb0c1b6b2c7f1f0c7e8b4c3d1e2a3b4c5d6e7f8a9"
    );
}

#[test]
fn autostop_suspend_config_null_and_unknown_states() {
    let mut v = full_sample();
    v["config"]["services"][0]["autostop"] = json!("suspend");
    let m: FlyMachine = serde_json::from_value(v).unwrap();
    assert_eq!(
        m.config_view().unwrap().unwrap().services[0].autostop,
        Some(Autostop::Suspend)
    );

    let unreachable: FlyMachine = serde_json::from_value(json!({
        "id": "e2865013a12389",
        "state": "started",
        "region": "iad",
        "config": null,
        "incomplete_config": {"metadata": {"fly_process_group": "app"}},
        "host_status": "unreachable",
        "events": null,
        "checks": null,
        "image_ref": null,
        "created_at": null
    }))
    .unwrap();
    assert!(unreachable.config.is_none());
    assert!(unreachable.config_view().unwrap().is_none());
    assert!(!unreachable.host_ok());
    assert!(unreachable.created_at().is_none());

    for state in ["hibernating", "", "STARTED"] {
        let m: FlyMachine = serde_json::from_value(json!({"id": "x", "state": state})).unwrap();
        assert_eq!(m.state, FlyState::Other(state.into()));
        assert_eq!(m.state.to_core(), fleetscale_core::MachineState::Unknown);
    }
    let no_state: FlyMachine = serde_json::from_value(json!({"id": "x", "state": null})).unwrap();
    assert_eq!(
        no_state.state.to_core(),
        fleetscale_core::MachineState::Unknown
    );

    // A malformed created_at does not fail the machine, it is just unknown.
    let bad_time: FlyMachine =
        serde_json::from_value(json!({"id": "x", "created_at": "yesterday"})).unwrap();
    assert!(bad_time.created_at().is_none());
}

#[test]
fn other_responses_old_and_new_shapes() {
    let old: WaitResponse = serde_json::from_value(json!({"ok": true})).unwrap();
    assert_eq!(old.ok, Some(true));
    let new: WaitResponse = serde_json::from_value(
        json!({"ok": true, "state": "started", "event_id": 42, "version": "01H"}),
    )
    .unwrap();
    assert_eq!(new.event_id.as_deref(), Some("42"));

    let lease: LeaseEnvelope = serde_json::from_value(json!({
        "status": "success",
        "data": {"nonce": "7b1c2d", "expires_at": "1699999999", "owner": "me@tokens.fly.io",
                 "description": "", "version": "01H"}
    }))
    .unwrap();
    let data = lease.data.unwrap();
    assert_eq!(data.expires_at, Some(1_699_999_999));
    assert_eq!(data.nonce, "7b1c2d");

    let apps: AppList = serde_json::from_value(json!({
        "total_apps": 2,
        "apps": [
            {"id": "a1", "name": "my-app-1", "machine_count": 3, "volume_count": 0, "network": "default"},
            {"id": "a2", "name": "my-app-2", "machine_count": null, "network": null, "new": true}
        ]
    }))
    .unwrap();
    assert_eq!(apps.apps.len(), 2);
    assert_eq!(apps.apps[1].machine_count, None);
}
