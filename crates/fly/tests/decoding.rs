//! Tolerant decoding of Machines API JSON samples (shapes from the Fly docs and fly-go's
//! `machine_types.go`, with the variations seen in the wild).

use fleetscale_fly::types::{AppList, LeaseEnvelope, WaitResponse};
use fleetscale_fly::{Autostop, FlyMachine, FlyState};
use serde_json::json;

/// A full machine as the docs show it, plus fields this crate does not know.
fn full_sample() -> serde_json::Value {
    json!({
        "id": "17811953c92e18",
        "name": "sparkling-rain-2222",
        "state": "started",
        "region": "ams",
        "instance_id": "01HBP4HXQ6JPP4GDHH6JYNBP2R",
        "private_ip": "fdaa:2:45b:a7b:19c:bbd4:5a9d:2",
        "config": {
            "init": {},
            "env": {"APP_ENV": "production"},
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256, "max_memory_mb": 1024},
            "metadata": {"fly_platform_version": "v2", "fly_process_group": "app",
                         "fly_release_id": "Zx3", "fly_release_version": "12"},
            "services": [{
                "protocol": "tcp", "internal_port": 8080,
                "autostop": true, "autostart": true, "min_machines_running": 0,
                "ports": [{"port": 80, "handlers": ["http"], "force_https": true},
                          {"port": 443, "handlers": ["http", "tls"]}],
                "concurrency": {"type": "connections", "hard_limit": 25, "soft_limit": 20},
                "force_instance_key": null
            }],
            "image": "registry.fly.io/my-app:deployment-01HBP4",
            "restart": {"policy": "on-failure", "max_retries": 10},
            "stop_config": {"signal": "SIGINT", "timeout": "5s"},
            "mounts": null,
            "checks": {"alive": {"type": "tcp", "port": 8080, "interval": "15s"}},
            "some_future_setting": {"nested": [1, 2, 3]}
        },
        "image_ref": {
            "registry": "registry.fly.io",
            "repository": "my-app",
            "tag": "deployment-01HBP4",
            "digest": "sha256:e9d7c1b5c5c4fcf6c4a1b8dcb0c1b6b2c7f1f0c7e8b4c3d1e2a3b4c5d6e7f8a9",
            "labels": {"fly.pg-version": "15.3"}
        },
        "created_at": "2023-10-31T02:30:10Z",
        "updated_at": "2023-10-31T02:30:12.5Z",
        "events": [{
            "id": "01HBP4J1X5N6K8JQ",
            "type": "exit",
            "status": "stopped",
            "source": "flyd",
            "timestamp": 1_698_719_410_123_u64,
            "request": {"exit_event": {"exit_code": 0, "guest_exit_code": 0, "oom_killed": false,
                                       "requested_stop": true, "restarting": false,
                                       "exited_at": "2023-10-31T02:30:10Z", "signal": -1},
                        "restart_count": 0}
        }, {
            "type": "launch", "status": "created", "source": "user", "timestamp": 1.6987194e12
        }],
        "checks": [{"name": "alive", "status": "passing", "output": "ok", "updated_at": "2023-10-31T02:31:10Z"}],
        "host_status": "ok",
        "incomplete_config": null,
        "cordoned": false,
        "containers": [{"name": "app", "state": "running"}],
        "version": 18446744073709551615u64
    })
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
