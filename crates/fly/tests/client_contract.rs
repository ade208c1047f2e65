//! Contract tests: `MachinesClient` against the fake Machines API over real HTTP on loopback,
//! for every endpoint and every error class.

mod common;

use std::time::Duration;

use common::{app_config, client, client_config, eventually, seed_app, server, status_fault, APP};
use fleetscale_fly::fake::{Delays, FakeConfig, FakeFlyServer, FakeRateLimits, Fault, FaultKind};
use fleetscale_fly::types::{CreateAppRequest, CreateMachineRequest, StopRequest, WaitResponse};
use fleetscale_fly::{
    ClientConfig, DestroyOptions, FlyError, FlyMachine, FlyState, ListOptions, MachinesClient,
    PacingConfig, Rate, RetryConfig, Token, WaitOptions,
};
use serde_json::json;

/// `?force=true`, the documented way to destroy a running machine.
const FORCE: DestroyOptions = DestroyOptions {
    force: true,
    kill: false,
};
/// `?kill=true`, what fly-go sends.
const KILL: DestroyOptions = DestroyOptions {
    force: false,
    kill: true,
};

/// Asserts that a Fly error maps to the named `fleetscale_core::Error` variant.
macro_rules! assert_maps_to {
    ($error:expr, $variant:ident) => {{
        let core = fleetscale_core::Error::from($error);
        assert!(
            matches!(core, fleetscale_core::Error::$variant { .. }),
            "expected {}, got {core:?}",
            stringify!($variant)
        );
    }};
}

/// Waits up to `secs` for machine `id` of [`APP`] to reach `state`.
async fn wait(
    c: &MachinesClient,
    id: &str,
    state: &str,
    secs: u64,
) -> Result<WaitResponse, FlyError> {
    c.wait_machine(APP, id, &WaitOptions::new(state, Duration::from_secs(secs)))
        .await
}

/// An instant fake with [`APP`] and its first machine, and a client of it.
async fn seeded() -> (FakeFlyServer, MachinesClient, FlyMachine) {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    let m = seed_app(&c, APP, None).await;
    (srv, c, m)
}

/// A fake that accepts only `token`.
async fn server_with_token(token: &str) -> FakeFlyServer {
    server(FakeConfig {
        token: Some(Token::new(token)),
        ..FakeConfig::instant()
    })
    .await
}

/// A client of `srv` that sends `token`.
fn client_with_token(srv: &FakeFlyServer, token: &str) -> MachinesClient {
    MachinesClient::new(Some(Token::new(token)), client_config(srv)).unwrap()
}

/// Lists the machines of [`APP`] with the options `set` chooses.
async fn list_where(c: &MachinesClient, set: impl FnOnce(&mut ListOptions)) -> Vec<FlyMachine> {
    let mut options = ListOptions::default();
    set(&mut options);
    c.list_machines(APP, &options).await.unwrap()
}

/// Creates a machine in [`APP`].
async fn create(c: &MachinesClient, request: CreateMachineRequest) -> Result<FlyMachine, FlyError> {
    c.create_machine(APP, &request).await
}

/// A create request for the default app config, to be completed with `..plain_create()`.
fn plain_create() -> CreateMachineRequest {
    CreateMachineRequest {
        config: app_config(None),
        ..Default::default()
    }
}

/// A create request for the default app config that leaves the machine `created`.
fn skip_launch_create() -> CreateMachineRequest {
    CreateMachineRequest {
        skip_launch: Some(true),
        ..plain_create()
    }
}

/// A create request for the default app config with a machine name.
fn named_create(name: &str) -> CreateMachineRequest {
    CreateMachineRequest {
        name: Some(name.into()),
        ..plain_create()
    }
}

/// A request to create app `name` in org `org`.
fn app_request(name: &str, org: &str) -> CreateAppRequest {
    CreateAppRequest {
        app_name: name.into(),
        org_slug: org.into(),
        network: None,
    }
}

/// A 429 fault with the given `Retry-After` header.
fn rate_limited(retry_after: &str) -> Fault {
    Fault::new(FaultKind::RateLimited {
        retry_after: Some(retry_after.into()),
    })
}

#[tokio::test]
async fn apps_create_get_list_and_name_taken() {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    let app = c
        .create_app(&app_request("my-app-1", "acme"))
        .await
        .unwrap();
    assert_eq!(app.name, "my-app-1");
    c.create_app(&app_request("other", "elsewhere"))
        .await
        .unwrap();
    let got = c.get_app("my-app-1").await.unwrap();
    assert_eq!(got.organization.unwrap().slug.as_deref(), Some("acme"));
    let list = c.list_apps("acme").await.unwrap();
    assert_eq!(list.total_apps, Some(1));
    assert_eq!(list.apps[0].name, "my-app-1");
    let dup = c
        .create_app(&app_request("my-app-1", "acme"))
        .await
        .unwrap_err();
    assert!(matches!(dup, FlyError::NameTaken { .. }), "{dup}");
    assert_maps_to!(dup, Conflict);
    let missing = c.get_app("nope").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    srv.shutdown().await;
}

#[tokio::test]
async fn machine_endpoints_full_lifecycle() {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    let first = seed_app(&c, APP, Some("app")).await;
    assert_eq!(first.state, FlyState::Created, "create answers `created`");
    assert_eq!(first.region.as_deref(), Some("ams"));
    let image = first.image_ref.clone().unwrap();
    assert_eq!(image.registry, "registry.fly.io");
    assert!(image.digest.starts_with("sha256:"));
    // The raw config round-trips, unknown fields included.
    assert_eq!(first.config.as_ref().unwrap(), &app_config(Some("app")));

    let w = wait(&c, &first.id, "started", 10).await.unwrap();
    assert_eq!(w.ok, Some(true));
    let got = c.get_machine(APP, &first.id).await.unwrap();
    assert_eq!(got.state, FlyState::Started);
    assert!(got.host_ok());
    assert!(got.created_at().is_some());

    // A second machine in another region and group, created stopped.
    let mut cfg2 = app_config(Some("worker"));
    cfg2["image"] = json!("registry.fly.io/web:deployment-1@sha256:feed");
    let second = c
        .create_machine(
            APP,
            &CreateMachineRequest {
                config: cfg2,
                region: Some("iad".into()),
                name: Some("worker-1".into()),
                skip_launch: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(second.name, "worker-1");
    assert_eq!(second.image_ref.unwrap().digest, "sha256:feed");

    let all = c.list_machines(APP, &ListOptions::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    let by_region = list_where(&c, |o| o.region = Some("iad".into())).await;
    assert_eq!(ids(&by_region), vec![second.id.clone()]);
    let started = list_where(&c, |o| o.states = vec!["started".into()]).await;
    assert_eq!(ids(&started), vec![first.id.clone()]);
    let in_group = list_where(&c, |o| {
        o.metadata
            .insert("fly_process_group".into(), "worker".into());
    })
    .await;
    assert_eq!(ids(&in_group), vec![second.id.clone()]);
    let summary = list_where(&c, |o| o.summary = true).await;
    assert!(summary
        .iter()
        .all(|m| m.config.is_none() && m.host_status.is_none()));

    // Stop with signal and timeout, wait for stopped with the instance id.
    c.stop_machine(
        APP,
        &first.id,
        &StopRequest {
            signal: Some("SIGTERM".into()),
            timeout: Some("5s".into()),
        },
        None,
    )
    .await
    .unwrap();
    c.wait_machine(
        APP,
        &first.id,
        &WaitOptions::new("stopped", Duration::from_secs(10))
            .with_instance_id(got.instance_id.clone()),
    )
    .await
    .unwrap();
    let started = c.start_machine(APP, &first.id, None).await.unwrap();
    assert_eq!(started.previous_state.as_deref(), Some("stopped"));
    wait(&c, &first.id, "started", 10).await.unwrap();

    // Suspend and resume.
    c.suspend_machine(APP, &first.id, None).await.unwrap();
    wait(&c, &first.id, "suspended", 10).await.unwrap();
    let resumed = c.start_machine(APP, &first.id, None).await.unwrap();
    assert_eq!(resumed.previous_state.as_deref(), Some("suspended"));

    // Cordon / uncordon.
    c.cordon(APP, &first.id, None).await.unwrap();
    assert_eq!(
        c.get_machine(APP, &first.id).await.unwrap().cordoned,
        Some(true)
    );
    c.uncordon(APP, &first.id, None).await.unwrap();
    assert_eq!(
        c.get_machine(APP, &first.id).await.unwrap().cordoned,
        Some(false)
    );

    // Starting a started machine is a 412 on Fly.
    wait(&c, &first.id, "started", 10).await.unwrap();
    let again = c.start_machine(APP, &first.id, None).await.unwrap_err();
    assert!(
        matches!(again, FlyError::PreconditionFailed { .. }),
        "{again}"
    );
    assert!(
        again.to_string().contains("from current state: 'started'"),
        "{again}"
    );

    // Destroying a running machine needs force.
    let running = c
        .destroy_machine(APP, &first.id, DestroyOptions::default(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(running, FlyError::PreconditionFailed { .. }),
        "{running}"
    );
    c.destroy_machine(APP, &first.id, FORCE, None)
        .await
        .unwrap();
    wait(&c, &first.id, "destroyed", 10).await.unwrap();
    // `kill=true` is accepted as well (what fly-go sends).
    c.destroy_machine(APP, &second.id, KILL, None)
        .await
        .unwrap();
    let remaining = c.list_machines(APP, &ListOptions::default()).await.unwrap();
    assert!(remaining.iter().all(|m| m.id != first.id));
    let deleted = list_where(&c, |o| o.include_deleted = true).await;
    assert!(deleted
        .iter()
        .any(|m| m.id == first.id && m.state == FlyState::Destroyed));
    let gone = c
        .destroy_machine(APP, &first.id, DestroyOptions::default(), None)
        .await
        .unwrap_err();
    assert!(gone.is_not_found(), "{gone}");

    // The query strings really went over the wire.
    let log = srv.fake().request_log();
    assert!(log.iter().any(|r| r.query.contains("include_deleted=true")));
    assert!(log
        .iter()
        .any(|r| r.query.contains("metadata.fly_process_group=worker")));
    assert!(log
        .iter()
        .any(|r| r.path.ends_with("/wait") && r.query.contains("instance_id=")));
    assert!(log
        .iter()
        .any(|r| r.method == "DELETE" && r.query.contains("kill=true")));
    srv.shutdown().await;
}

fn ids(ms: &[FlyMachine]) -> Vec<String> {
    ms.iter().map(|m| m.id.clone()).collect()
}

#[tokio::test]
async fn skip_launch_stays_created() {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    c.create_app(&app_request(APP, "o")).await.unwrap();
    let m = create(&c, skip_launch_create()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        c.get_machine(APP, &m.id).await.unwrap().state,
        FlyState::Created
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn leases_nonces_and_409() {
    let (srv, c, m) = seeded().await;
    let lease = c
        .acquire_lease(APP, &m.id, Duration::from_secs(30), Some("test"))
        .await
        .unwrap();
    assert!(!lease.nonce.is_empty());
    assert!(lease.expires_at.is_some());

    let conflict = c
        .acquire_lease(APP, &m.id, Duration::from_secs(30), None)
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, FlyError::LeaseConflict { .. }),
        "{conflict}"
    );
    assert_eq!(conflict.status(), Some(409));
    assert!(
        conflict.to_string().contains("lease currently held by"),
        "{conflict}"
    );
    assert!(conflict.request_id().is_some());

    let stop = c
        .stop_machine(APP, &m.id, &StopRequest::default(), None)
        .await
        .unwrap_err();
    assert!(matches!(stop, FlyError::LeaseConflict { .. }), "{stop}");
    assert_maps_to!(stop, Conflict);
    let wrong = c
        .release_lease(APP, &m.id, "not-the-nonce")
        .await
        .unwrap_err();
    assert!(matches!(wrong, FlyError::LeaseConflict { .. }));

    let refreshed = c
        .refresh_lease(APP, &m.id, &lease.nonce, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(refreshed.nonce, lease.nonce);
    let seen = c.get_lease(APP, &m.id).await.unwrap();
    assert_eq!(seen.owner, lease.owner);
    assert!(seen.nonce.is_empty(), "GET lease does not reveal the nonce");

    c.stop_machine(APP, &m.id, &StopRequest::default(), Some(&lease.nonce))
        .await
        .unwrap();
    c.release_lease(APP, &m.id, &lease.nonce).await.unwrap();
    assert!(c.get_lease(APP, &m.id).await.unwrap_err().is_not_found());
    c.start_machine(APP, &m.id, None).await.unwrap();

    // The nonce header went over the wire.
    let log = srv.fake().request_log();
    assert!(log
        .iter()
        .any(|r| r.path.ends_with("/stop") && r.nonce.as_deref() == Some(lease.nonce.as_str())));

    // create with lease_ttl answers a nonce and holds the lease.
    let leased = create(
        &c,
        CreateMachineRequest {
            lease_ttl: Some(30),
            ..plain_create()
        },
    )
    .await
    .unwrap();
    let nonce = leased.nonce.clone().expect("nonce with lease_ttl");
    let e = c
        .stop_machine(APP, &leased.id, &StopRequest::default(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, FlyError::LeaseConflict { .. }));
    c.release_lease(APP, &leased.id, &nonce).await.unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn auth_headers_and_401() {
    let srv = server_with_token("FlyV1 fm2_secret,fm1a_other").await;
    // The same token with a different spelling produces the same header.
    let ok = client_with_token(&srv, "fm2_secret, fm1a_other");
    ok.list_apps("o").await.unwrap();
    let bad = client_with_token(&srv, "fm2_wrong");
    let e = bad.list_apps("o").await.unwrap_err();
    assert!(matches!(e, FlyError::Unauthorized { .. }), "{e}");
    assert_eq!(e.status(), Some(401));
    assert!(e.request_id().is_some());
    assert!(
        !e.to_string().contains("fm2_wrong"),
        "no token in errors: {e}"
    );
    assert_maps_to!(e, Unauthorized);
    let none = MachinesClient::new(None, client_config(&srv)).unwrap();
    assert!(matches!(
        none.list_apps("o").await.unwrap_err(),
        FlyError::Unauthorized { .. }
    ));
    // 401 is not retried.
    let log = srv.fake().request_log();
    assert_eq!(log.iter().filter(|r| r.status == 401).count(), 2);
    srv.shutdown().await;

    // Bearer tokens.
    let srv = server_with_token("personal-token").await;
    let c = client_with_token(&srv, "Bearer personal-token");
    c.list_apps("o").await.unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn rate_limit_429_with_retry_after_is_waited_and_retried() {
    let (srv, c, m) = seeded().await;
    srv.fake().clear_request_log();
    srv.fake()
        .inject(rate_limited("1").method("GET").path("/machines/"));
    let got = c.get_machine(APP, &m.id).await.unwrap();
    assert_eq!(got.id, m.id);
    let log = srv.fake().request_log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!((log[0].status, log[1].status), (429, 200));
    let gap = log[1].at.duration_since(log[0].at).unwrap();
    assert!(
        gap >= Duration::from_millis(900),
        "retried after {gap:?}, before Retry-After"
    );

    // An HTTP-date Retry-After in the past means "now".
    srv.fake().inject(
        rate_limited("Sun, 06 Nov 1994 08:49:37 GMT")
            .method("GET")
            .path("/machines/"),
    );
    c.get_machine(APP, &m.id).await.unwrap();

    // A Retry-After longer than the cap is returned, not waited out.
    srv.fake().clear_request_log();
    srv.fake()
        .inject(rate_limited("120").method("GET").path("/machines/"));
    let e = c.get_machine(APP, &m.id).await.unwrap_err();
    match &e {
        FlyError::RateLimited { retry_after, .. } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(120)))
        }
        other => panic!("{other}"),
    }
    assert_eq!(srv.fake().request_log().len(), 1);
    let request_id = e.request_id().map(str::to_owned);
    assert!(
        request_id.is_some(),
        "the fake answers with a fly-request-id"
    );
    match fleetscale_core::Error::from(e) {
        ref core @ fleetscale_core::Error::RateLimited {
            retry_after,
            request_id: ref kept,
            ref message,
            ref source,
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(120)));
            assert_eq!(*kept, request_id, "the request id is kept");
            assert!(message.contains("/machines/"), "{message}");
            let source = source
                .as_ref()
                .expect("the Fly error is kept as the source");
            assert!(source.downcast_ref::<FlyError>().is_some(), "{core}");
        }
        other => panic!("{other}"),
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn server_side_rate_limits_and_client_pacing() {
    let limits = FakeRateLimits {
        get_machine: Rate::new(2.0, 1),
        ..FakeRateLimits::default()
    };
    let srv = server(FakeConfig {
        rate_limits: Some(limits),
        ..FakeConfig::instant()
    })
    .await;
    let unpaced = client(&srv);
    let m = seed_app(&unpaced, APP, None).await;
    srv.fake().clear_request_log();
    for _ in 0..3 {
        unpaced.get_machine(APP, &m.id).await.unwrap();
    }
    let log = srv.fake().request_log();
    assert!(
        log.iter().any(|r| r.status == 429),
        "the fake limits: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|r| r.status == 200).count(),
        3,
        "the client retried"
    );

    // With client pacing under the server's rate, no 429 is ever seen.
    let paced = MachinesClient::new(
        None,
        ClientConfig {
            // A little slower than the server allows, so network jitter cannot bunch requests.
            pacing: PacingConfig {
                get_machine: Rate::new(1.5, 1),
                ..PacingConfig::default()
            },
            ..client_config(&srv)
        },
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    srv.fake().clear_request_log();
    for _ in 0..3 {
        paced.get_machine(APP, &m.id).await.unwrap();
    }
    let log = srv.fake().request_log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log.iter().all(|r| r.status == 200), "{log:?}");
    srv.shutdown().await;
}

#[tokio::test]
async fn not_found_wait_timeout_invalid_and_capacity() {
    let (srv, c, m) = seeded().await;

    let nf = c.get_machine(APP, "0000000000dead").await.unwrap_err();
    assert!(nf.is_not_found());
    assert_eq!(nf.status(), Some(404));
    assert!(nf.request_id().is_some());
    assert!(fleetscale_core::Error::from(nf).is_not_found());
    let nf_app = c
        .list_machines("no-such-app", &ListOptions::default())
        .await
        .unwrap_err();
    assert!(nf_app.is_not_found());

    // 408: waiting for a state that never comes.
    let idle = create(&c, skip_launch_create()).await.unwrap();
    let timeout = wait(&c, &idle.id, "started", 1).await.unwrap_err();
    assert!(matches!(timeout, FlyError::WaitTimeout { .. }), "{timeout}");
    assert_eq!(timeout.status(), Some(408));
    let core = fleetscale_core::Error::from(timeout);
    assert!(
        matches!(
            core,
            fleetscale_core::Error::Timeout { after, ref source, .. }
                if after == Duration::from_secs(1) && source.is_some()
        ),
        "the wait it asked for, and the Fly error as the source: {core:?}"
    );
    assert!(core.to_string().ends_with("timed out after 1 s"), "{core}");
    // Wait timeouts are clamped to 60 s before they reach the API.
    srv.fake().clear_request_log();
    let _ = tokio::time::timeout(
        Duration::from_millis(200),
        wait(&c, &idle.id, "started", 600),
    )
    .await;
    let log = srv.fake().request_log();
    assert!(
        log.is_empty() || log[0].query.contains("timeout=60"),
        "{log:?}"
    );

    // 422 and 400.
    let invalid = c
        .create_machine(
            APP,
            &CreateMachineRequest {
                config: json!({"env": {}}),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(invalid, FlyError::InvalidRequest { .. }),
        "{invalid}"
    );
    assert_eq!(invalid.status(), Some(422));
    assert_maps_to!(invalid, InvalidRequest);
    let bad_state = wait(&c, &m.id, "running", 1).await.unwrap_err();
    assert!(matches!(bad_state, FlyError::InvalidRequest { .. }));
    assert_eq!(bad_state.status(), Some(400));

    // insufficient_capacity.
    srv.fake().fail_next_creates(1);
    let cap = create(&c, plain_create()).await.unwrap_err();
    assert!(
        matches!(cap, FlyError::InsufficientCapacity { .. }),
        "{cap}"
    );
    assert_maps_to!(cap, Capacity);
    create(&c, plain_create()).await.unwrap();

    // name_taken on a machine name.
    create(&c, named_create("n1")).await.unwrap();
    let taken = create(&c, named_create("n1")).await.unwrap_err();
    assert!(matches!(taken, FlyError::NameTaken { .. }), "{taken}");
    srv.shutdown().await;
}

#[tokio::test]
async fn five_xx_is_retried_for_idempotent_calls_only() {
    let (srv, c, m) = seeded().await;
    let fake = srv.fake();

    // 503 twice, then success.
    fake.clear_request_log();
    fake.inject(
        status_fault(503, "upstream unavailable")
            .method("GET")
            .path("/machines")
            .times(2),
    );
    let list = c.list_machines(APP, &ListOptions::default()).await.unwrap();
    assert_eq!(list.len(), 1);
    let statuses: Vec<u16> = fake.request_log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 503, 200]);

    // 502 forever: gives up after max_attempts.
    fake.clear_request_log();
    fake.inject(
        status_fault(502, "<html>bad gateway</html>")
            .method("POST")
            .path("/start")
            .times(100),
    );
    let e = c.start_machine(APP, &m.id, None).await.unwrap_err();
    assert!(matches!(e, FlyError::Server { .. }), "{e}");
    assert!(e.to_string().contains("bad gateway"));
    assert_eq!(fake.count_requests("POST", "/start"), 4);
    assert_maps_to!(e, Unavailable);
    fake.clear_faults();

    // 500 is not retried.
    fake.clear_request_log();
    fake.inject(status_fault(500, r#"{"error":"boom"}"#).method("GET"));
    let e = c.get_machine(APP, &m.id).await.unwrap_err();
    assert!(matches!(e, FlyError::Server { .. }));
    assert_eq!(fake.request_log().len(), 1);

    // A create is never retried after an error that may follow its execution (429 only is).
    fake.clear_request_log();
    fake.inject(
        status_fault(503, "{}")
            .method("POST")
            .path("/machines")
            .times(5),
    );
    let e = create(&c, plain_create()).await.unwrap_err();
    assert!(matches!(e, FlyError::Server { .. }));
    assert_eq!(fake.count_requests("POST", "/machines"), 1);
    fake.clear_faults();

    // A destroy without a nonce is not retried; with a nonce it is.
    c.stop_machine(APP, &m.id, &StopRequest::default(), None)
        .await
        .unwrap();
    fake.clear_request_log();
    fake.inject(status_fault(503, "{}").method("DELETE").times(1));
    assert!(c
        .destroy_machine(APP, &m.id, DestroyOptions::default(), None)
        .await
        .is_err());
    assert_eq!(fake.count_requests("DELETE", &m.id), 1);
    let lease = c
        .acquire_lease(APP, &m.id, Duration::from_secs(30), None)
        .await
        .unwrap();
    fake.inject(status_fault(503, "{}").method("DELETE").times(1));
    c.destroy_machine(APP, &m.id, DestroyOptions::default(), Some(&lease.nonce))
        .await
        .unwrap();
    assert_eq!(fake.count_requests("DELETE", &m.id), 3);
    srv.shutdown().await;
}

#[tokio::test]
async fn malformed_bodies_are_invalid_response_errors() {
    let (srv, c, m) = seeded().await;
    srv.fake().inject(
        Fault::new(FaultKind::Malformed)
            .method("GET")
            .path("/machines"),
    );
    let e = c
        .list_machines(APP, &ListOptions::default())
        .await
        .unwrap_err();
    match &e {
        FlyError::MalformedBody { ctx, excerpt, .. } => {
            assert_eq!(&*ctx.method, "GET");
            assert_eq!(ctx.path, format!("/v1/apps/{APP}/machines"));
            assert_eq!(ctx.status, 200);
            assert!(ctx.request_id.is_some());
            assert!(excerpt.contains("truncated"), "{excerpt}");
        }
        other => panic!("{other}"),
    }
    match fleetscale_core::Error::from(e) {
        fleetscale_core::Error::InvalidResponse { context, .. } => {
            assert!(context.contains("/machines"), "{context}")
        }
        other => panic!("{other}"),
    }
    // A body of the wrong shape too.
    srv.fake().inject(
        status_fault(200, r#"{"not":"a list"}"#)
            .method("GET")
            .path("/machines"),
    );
    assert!(matches!(
        c.list_machines(APP, &ListOptions::default())
            .await
            .unwrap_err(),
        FlyError::MalformedBody { .. }
    ));
    // Nothing broke: the next call works.
    assert_eq!(c.get_machine(APP, &m.id).await.unwrap().id, m.id);
    srv.shutdown().await;
}

#[tokio::test]
async fn dropped_connections_and_hangs() {
    let (srv, c, m) = seeded().await;
    let fake = srv.fake();

    fake.clear_request_log();
    fake.inject(
        Fault::new(FaultKind::DropConnection)
            .method("GET")
            .path("/machines/"),
    );
    assert_eq!(c.get_machine(APP, &m.id).await.unwrap().id, m.id);
    assert_eq!(
        fake.count_requests("GET", &m.id),
        2,
        "retried after the drop"
    );

    fake.clear_request_log();
    fake.inject(
        Fault::new(FaultKind::DropConnection)
            .method("POST")
            .path("/machines"),
    );
    let e = create(&c, plain_create()).await.unwrap_err();
    assert!(matches!(e, FlyError::Transport { .. }), "{e}");
    assert_eq!(fake.count_requests("POST", "/machines"), 1);

    // A hang hits the per-attempt timeout; idempotent calls retry and succeed.
    let short = MachinesClient::new(
        None,
        ClientConfig {
            timeout: Duration::from_millis(300),
            ..client_config(&srv)
        },
    )
    .unwrap();
    fake.inject(Fault::new(FaultKind::Hang).method("GET").path("/machines/"));
    assert_eq!(short.get_machine(APP, &m.id).await.unwrap().id, m.id);
    let no_retry = MachinesClient::new(
        None,
        ClientConfig {
            timeout: Duration::from_millis(300),
            retry: RetryConfig::none(),
            ..client_config(&srv)
        },
    )
    .unwrap();
    fake.inject(Fault::new(FaultKind::Hang).method("GET").path("/machines/"));
    let e = no_retry.get_machine(APP, &m.id).await.unwrap_err();
    assert!(matches!(e, FlyError::Timeout { .. }), "{e}");
    assert_maps_to!(e, Timeout);

    // Latency delays but does not fail.
    fake.inject(Fault::new(FaultKind::Latency(Duration::from_millis(100))).method("GET"));
    c.get_machine(APP, &m.id).await.unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn cancelled_calls_leave_the_client_usable() {
    let (srv, c, m) = seeded().await;
    srv.fake()
        .inject(Fault::new(FaultKind::Hang).method("GET").path("/machines/"));
    let cancelled =
        tokio::time::timeout(Duration::from_millis(200), c.get_machine(APP, &m.id)).await;
    assert!(cancelled.is_err(), "the hanging call was dropped");
    // Same for a call waiting in backoff.
    srv.fake().inject(rate_limited("3").method("GET"));
    let cancelled =
        tokio::time::timeout(Duration::from_millis(500), c.get_machine(APP, &m.id)).await;
    assert!(cancelled.is_err());
    assert_eq!(c.get_machine(APP, &m.id).await.unwrap().id, m.id);
    srv.shutdown().await;
}

#[tokio::test]
async fn every_answer_has_a_request_id_and_metrics_are_served() {
    let srv = server(FakeConfig {
        delays: Delays::ZERO,
        ..FakeConfig::instant()
    })
    .await;
    let c = client(&srv);
    let m = seed_app(&c, APP, None).await;
    let idle = create(&c, skip_launch_create()).await.unwrap();
    let _ = c.get_machine(APP, "missing").await;
    eventually("first machine started", || async {
        srv.fake().state(APP, &m.id) == Some(FlyState::Started)
    })
    .await;
    let log = srv.fake().request_log();
    assert!(!log.is_empty());
    assert!(
        log.iter().all(|r| r.request_id.starts_with("fake-")),
        "{log:?}"
    );

    let body = reqwest::get(format!("{}/metrics", srv.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("# TYPE fly_instance_up gauge"), "{body}");
    assert!(
        body.contains(&format!(
            "fly_instance_up{{app=\"{APP}\",region=\"ams\",instance=\"{}\"}} 1",
            m.id
        )),
        "{body}"
    );
    assert!(
        !body.contains(&idle.id),
        "stopped machines are not up: {body}"
    );

    // The Fly Proxy starts the idle machine: now it is up too.
    assert!(srv.fake().proxy_autostart(APP, &idle.id));
    eventually("autostarted", || async {
        srv.fake().state(APP, &idle.id) == Some(FlyState::Started)
    })
    .await;
    assert!(srv.fake().metrics_text().contains(&idle.id));
    let got = c.get_machine(APP, &idle.id).await.unwrap();
    assert_eq!(got.events[0].source.as_deref(), Some("proxy"));
    srv.shutdown().await;
}

#[tokio::test]
async fn tolerant_decoding_over_http() {
    let srv = server(FakeConfig::instant()).await;
    let c = client(&srv);
    seed_app(&c, APP, None).await;
    let odd: FlyMachine = serde_json::from_value(json!({
        "id": "0000000000beef",
        "name": "odd",
        "state": "hibernating",
        "region": "syd",
        "config": null,
        "host_status": "unreachable",
        "created_at": "2024-01-02T03:04:05.678Z",
    }))
    .unwrap();
    srv.fake().insert_machine(APP, odd);
    let list = c.list_machines(APP, &ListOptions::default()).await.unwrap();
    let odd = list.iter().find(|m| m.id == "0000000000beef").unwrap();
    assert_eq!(odd.state, FlyState::Other("hibernating".into()));
    assert!(odd.config.is_none());
    assert!(!odd.host_ok());
    let seeded = list.iter().find(|m| m.id != "0000000000beef").unwrap();
    let view = seeded.config_view().unwrap().unwrap();
    assert_eq!(
        view.services[0].autostop,
        Some(fleetscale_fly::Autostop::Suspend)
    );
    srv.shutdown().await;
}

#[test]
fn from_env_honours_fly_flaps_base_url() {
    // Only this test touches the variable.
    std::env::set_var("FLY_FLAPS_BASE_URL", "http://127.0.0.1:4280");
    let c = MachinesClient::from_env(None).unwrap();
    assert_eq!(c.base_url().as_str(), "http://127.0.0.1:4280/");
    std::env::remove_var("FLY_FLAPS_BASE_URL");
    assert_eq!(
        ClientConfig::from_env().base_url,
        "https://api.machines.dev"
    );
}
